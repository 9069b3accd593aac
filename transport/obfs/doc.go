// Package obfs is Magpie's obfuscated transport: it carries any byte
// stream (the Noise link runs over it unchanged) so that nothing on the
// wire is fixed or fingerprintable, and a server never answers a prober.
// The design follows obfs4 (Yawning Angel, obfs4-spec.txt in the
// obfs4proxy project: Elligator 2 keys, an ntor handshake, a mark and an
// hour-bound MAC to find and authenticate the first message, encrypted
// frame lengths, random padding), reimplemented here and changed where
// noted; it is not wire-compatible with obfs4.
//
// # Keys
//
// A server has a node ID (20 random bytes) and a static X25519 key pair
// (b, B). The invite carries cert = base64url(nodeID ‖ B), unpadded. Both
// sides then know K = B ‖ nodeID, the key of every HMAC-SHA256 below.
// Ephemeral keys travel as Elligator 2 representatives (32 uniformly
// random-looking bytes; the two unused high bits are random), see
// elligator.go.
//
// # Client's first message
//
// One write, one TCP segment, 256–1400 bytes:
//
//	prefix (0–63) ‖ X' (32) ‖ M_C (16) ‖ L_C (2) ‖ P_C ‖ MAC_C (16)
//
//	M_C ‖ mask = HMAC(K, "M" ‖ X')[0:18]
//	L_C        = len(P_C) XOR mask (big-endian)
//	MAC_C      = HMAC(K, "C" ‖ everything before MAC_C ‖ hour)[0:16]
//
// where hour is the number of hours since the Unix epoch (8 bytes,
// big-endian). The server finds X' by trying each offset in [0, 63] for a
// matching mark; the length then tells it where MAC_C is, and it accepts
// MAC_C for its own hour, the one before or the one after. Accepted marks
// go into a replay cache kept until their hour can no longer be accepted
// (at least Config.ReplayWindow); a second message with the same mark is
// a probe. The message must end exactly after MAC_C.
//
// The prefix and P_C are shaped per connection so that the Great
// Firewall's detector of fully encrypted traffic (Wu et al., USENIX
// Security 2023; see FETExempt) exempts the packet, choosing at random
// among: a printable prefix of 6–63 bytes (rule Ex2); 21–40 printable bytes
// at a random place in P_C (Ex4); padding of bytes with at most two set
// bits (Ex1, low) or at least six (Ex1, high). X', M_C, L_C and MAC_C stay
// uniformly random. The client checks the finished packet with FETExempt.
//
// # Server's reply
//
//	Y' (32) ‖ M_S (16) ‖ L_S (2) ‖ AUTH (32) ‖ P_S (0–1024) ‖ MAC_S (16)
//
// with M_S and the mask of L_S from HMAC(K, "m" ‖ Y') and MAC_S =
// HMAC(K, "S" ‖ everything before it ‖ the client's hour). Keys come from
// ntor (see ntor in handshake.go): AUTH proves the server holds b, and
// HKDF-SHA256 yields a ChaCha20-Poly1305 key and a length-mask key per
// direction.
//
// # Probes
//
// At accept the server draws a deadline uniformly in [ProbeMin, ProbeMax].
// If the bytes received are not a valid, fresh first message (random
// bytes, truncated or overlong messages, wrong cert, stale hour, replays,
// altered replays), or none arrives in time, it sends nothing, reads and
// discards until that deadline and closes then, even if the peer closed
// first. No byte count triggers a close.
//
// # Data
//
//	frame = L' (2) ‖ ChaCha20-Poly1305(plen (2) ‖ payload ‖ padding)
//
// L' is the sealed length XOR the next two bytes of a ChaCha20 keystream,
// and is the AEAD's additional data; nonces are a per-direction counter.
// Each Write is cut into frames of random sizes (a per-connection
// distribution), its last frame is often padded and sometimes followed by
// a padding-only frame, so on-wire record sizes do not follow the inner
// protocol's messages.
package obfs
