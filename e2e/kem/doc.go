// Package kem is the post-quantum KEM of PQXDH as libsignal deploys it:
// its "Kyber1024" key type (0x08), which is CRYSTALS-Kyber-1024 as
// submitted to round 3 of the NIST process ("CRYSTALS-Kyber Algorithm
// Specifications and Supporting Documentation", version 3.02, 2021-08-04),
// not the ML-KEM-1024 of FIPS 203 ("Module-Lattice-Based
// Key-Encapsulation Mechanism Standard", 2024-08-13), though the two share
// every encoding, as explained below.
//
// # Built on crypto/mlkem
//
// Round-3 Kyber and ML-KEM share K-PKE, the parameters (k = 4, η1 = η2 = 2,
// du = 11, dv = 5) and therefore every encoding: a public key is 1568
// bytes, a ciphertext 1568 bytes. They differ only in the hashing around
// K-PKE. Round-3 Kyber.CCAKEM.Enc (spec v3.02, Algorithm 8) is
//
//	m ← random 32 bytes; m = H(m)
//	(K̄, r) = G(m ‖ H(pk)); c = Kyber.CPAPKE.Enc(pk, m, r)
//	K = KDF(K̄ ‖ H(c))
//
// with H = SHA3-256, G = SHA3-512, KDF = SHAKE-256. ML-KEM.Encaps (FIPS
// 203, Algorithms 17 and 20) is
//
//	m ← random 32 bytes
//	(K, r) = G(m ‖ H(ek)); c = K-PKE.Encrypt(ek, m, r)
//
// so ML-KEM's K is round-3's K̄ for the message m' = H(m). Both messages
// are uniformly random, hence this package encapsulates with crypto/mlkem
// and finishes with the one step ML-KEM dropped:
//
//	ss = SHAKE-256(K ‖ SHA3-256(c))[:32]
//
// Decapsulation (round-3 Algorithm 9, FIPS 203 Algorithms 18 and 21)
// re-encrypts the decrypted m' and compares; on success both compute the
// same K̄ from G(m' ‖ h), and the same final step gives round-3's K. So for
// every valid ciphertext this package and libsignal agree exactly.
//
// # The one divergence: implicit rejection
//
// On an invalid ciphertext (re-encryption mismatch), round 3 returns
// KDF(z ‖ H(c)) and ML-KEM returns J(z ‖ c) = SHAKE-256(z ‖ c); this
// package then applies the final step to that. Both results are
// pseudorandom values derived from the secret z, so neither the sender nor
// anyone else can tell the difference, and a session built on such a
// ciphertext fails the same way (its keys match nobody's). Only
// implementations compared on deliberately corrupted ciphertexts would
// notice.
//
// crypto/mlkem also performs FIPS 203 §7.2's encapsulation key check:
// every coefficient in the public key must be reduced mod q. Round 3 does
// not check; an honestly generated key always passes.
//
// # Encodings (libsignal v0.90.0, rust/protocol/src/kem.rs)
//
//   - Public key: 0x08 ‖ 1568 bytes, as in PreKeyBundle and KyberPreKeyRecord.
//   - Ciphertext: also carries the type byte, 0x08 ‖ 1568 bytes (1569 in
//     all), and that is exactly what goes in
//     PreKeySignalMessage.kyber_ciphertext. libsignal refuses a ciphertext
//     whose type byte differs from the decapsulating key's.
//   - Private key: libsignal stores 0x08 ‖ the 3168-byte round-3 secret key
//     (s ‖ pk ‖ H(pk) ‖ z). Magpie stores only the 64-byte ML-KEM seed
//     (d ‖ z, FIPS 203 §7.1), from which crypto/mlkem re-derives everything.
//     Round-3 key generation hashes d without ML-KEM's domain separator
//     byte, so libsignal's secret keys cannot be imported here; Magpie
//     never needs to, since each side only decapsulates with its own keys.
package kem
