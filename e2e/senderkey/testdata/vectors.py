#!/usr/bin/env python3
"""Writes vectors.json: known answers for Sender Key chains, computed here,
independently of Magpie's Go code and of libsignal, from the definitions:

  chain key i+1   = HMAC-SHA256(chain key i, 0x02)
  message seed i  = HMAC-SHA256(chain key i, 0x01)
  48 bytes        = HKDF-SHA256(salt: none, ikm: seed i, info: "WhisperGroup")
  IV, cipher key  = bytes 0-15, bytes 16-47
  ciphertext i    = AES-256-CBC(cipher key, IV, PKCS#7(plaintext i))

HMAC and HKDF (RFC 5869) use only Python's standard library; AES-CBC and
the X25519 public key come from the `cryptography` package. The signing key
is not part of the derivation; it is there so that the libsignal
cross-check (TestVectorsAgainstLibsignal) can sign messages that carry
these ciphertexts.

Run from this directory: python3 vectors.py > vectors.json
"""
import hashlib
import hmac
import json

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat


def hkdf_sha256(ikm, info, n):
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()  # RFC 5869 2.2: no salt = HashLen zeros
    out, t, i = b"", b"", 1
    while len(out) < n:
        t = hmac.new(prk, t + info + bytes([i]), hashlib.sha256).digest()
        out += t
        i += 1
    return out[:n]


def cbc(key, iv, pt):
    p = padding.PKCS7(128).padder()
    e = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return e.update(p.update(pt) + p.finalize()) + e.finalize()


chain_key0 = hashlib.sha256(b"magpie sender key vectors: chain key 0").digest()
signing_private = bytearray(hashlib.sha256(b"magpie sender key vectors: signing key").digest())
signing_private[0] &= 248  # stored clamped, as libsignal and Magpie store private keys
signing_private[31] &= 127
signing_private[31] |= 64
signing_public = X25519PrivateKey.from_private_bytes(bytes(signing_private)).public_key().public_bytes(
    Encoding.Raw, PublicFormat.Raw)

plaintexts = {
    0: b"",                             # one block of padding only
    1: b"exactly sixteen!",             # a full block, then a block of padding
    2: b"Magpie sender key vector 2",
    1000: "Magpie → libsignal, iteration 1000".encode(),
}
wanted = list(range(8)) + [1000]

vectors = []
ck = chain_key0
for i in range(max(wanted) + 1):
    if i in wanted:
        seed = hmac.new(ck, b"\x01", hashlib.sha256).digest()
        okm = hkdf_sha256(seed, b"WhisperGroup", 48)
        iv, key = okm[:16], okm[16:]
        pt = plaintexts.get(i, f"message {i}".encode())
        vectors.append({
            "iteration": i, "chain_key": ck.hex(), "seed": seed.hex(), "iv": iv.hex(),
            "cipher_key": key.hex(), "plaintext": pt.hex(), "ciphertext": cbc(key, iv, pt).hex(),
        })
    ck = hmac.new(ck, b"\x02", hashlib.sha256).digest()

print(json.dumps({
    "_comment": [
        "Known answers for Sender Key chains (libsignal v0.90.0 sender_keys.rs SenderChainKey, SenderMessageKey).",
        "Computed by vectors.py in this directory from the definitions (HMAC-SHA256 chain steps with 0x02, message",
        "seeds with 0x01, HKDF-SHA256 without salt and info WhisperGroup to IV 16 then key 32, AES-256-CBC PKCS#7),",
        "with Python's hmac and hashlib and the cryptography package: independently of Magpie and of libsignal.",
        "TestVectors checks Magpie against them; TestVectorsAgainstLibsignal checks them against libsignal 0.90.0:",
        "libsignal decrypts each ciphertext from a message it signed itself with signing_private, and its record",
        "after a jump holds exactly these seeds and the next chain key.",
    ],
    "chain_key_0": chain_key0.hex(),
    "signing_private": bytes(signing_private).hex(),
    "signing_public": signing_public.hex(),
    "vectors": vectors,
}, indent=1, ensure_ascii=False))
