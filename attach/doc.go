// Package attach encrypts and decrypts attachments (photos, video, voice
// notes, files) on the client, before they are uploaded and after they are
// downloaded. The server only ever stores and serves the ciphertext.
//
// # Format
//
// Every attachment is encrypted under its own fresh random 32-byte key
// (NewKey). The key, the ciphertext's SHA-256 Digest and the attachment's
// metadata travel to the recipients inside an ordinary end-to-end message;
// the ciphertext travels separately.
//
// The plaintext is cut into chunks of ChunkSize (64 KiB) bytes. Every chunk
// except the last is exactly ChunkSize bytes; the last one is 1..ChunkSize
// bytes, and is empty only when the whole attachment is empty (so an empty
// attachment is a single empty final chunk). Chunk i is sealed with
// ChaCha20-Poly1305 (RFC 8439) under the attachment key, with no associated
// data and the 12-byte nonce
//
//	nonce = i as an 11-byte big-endian integer ‖ flag
//	flag  = 0x01 for the last chunk, 0x00 for every other chunk
//
// and the ciphertext is the concatenation of the sealed chunks, with no
// header and no framing:
//
//	chunk 0:   ChunkSize bytes of ciphertext ‖ 16-byte Poly1305 tag
//	chunk 1:   ChunkSize bytes of ciphertext ‖ 16-byte Poly1305 tag
//	...
//	chunk n-1: 0..ChunkSize bytes of ciphertext ‖ 16-byte tag (flag 0x01)
//
// A ciphertext chunk is therefore ChunkSize+Overhead = 65,552 bytes, except
// the last, and EncryptedSize gives the total. This is the STREAM
// construction of Hoang, Reyhanitabar, Rogaway and Vizár ("Online
// Authenticated-Encryption and its Nonce-Reuse Misuse-Resistance", CRYPTO
// 2015), instantiated exactly as the payload of the age file format (C2SP
// age.md, "Payload"): same AEAD, chunk size, nonce layout and last-chunk
// rule. Because the key is never reused, no per-file nonce prefix is needed.
//
// Decryption authenticates every chunk before releasing its plaintext. The
// index in the nonce makes reordered, duplicated or dropped chunks fail
// (ErrTampered); the flag makes a stream cut at a chunk boundary fail
// (ErrTruncated: the last chunk left does not open as a final chunk); and
// bytes after a final chunk fail: ErrTrailingData after a full final chunk,
// ErrTampered after a short one (the extra bytes become part of what is
// opened as the last chunk, which then fails authentication).
//
// # Why not Signal's attachment format
//
// Signal encrypts an attachment as one AES-256-CBC message followed by one
// HMAC-SHA256 over all of it. That MAC can only be checked after the last
// byte has arrived, so a client must either buffer or spool the whole file
// and hold back all of it, or hand unauthenticated plaintext to a decoder;
// and a download that breaks off and resumes verifies nothing until the end.
// STREAM with ChaCha20-Poly1305 instead encrypts and decrypts in constant
// memory (one 64 KiB chunk at a time, whatever the file's size), and every
// chunk carries its own tag, so a resumed download verifies each chunk as it
// arrives (DecryptChunk) and no unauthenticated byte ever reaches a media
// decoder. What a per-chunk AEAD does not give is key commitment: Poly1305
// is not committing, so a malicious sender could in principle craft one
// ciphertext that opens to different plaintexts under different keys. The
// sender therefore puts the SHA-256 of the whole ciphertext (Digest) in the
// end-to-end message next to the key; the recipient checks it, which pins
// the exact bytes every recipient accepts and stops the server from swapping
// in any other ciphertext. It uses only ChaCha20-Poly1305 and SHA-256, which
// the project already relies on, and invents nothing.
//
// # Security notes paragraph (for docs/SECURITY.md)
//
// Attachments are encrypted on the client with a fresh random 256-bit key
// each, in the STREAM construction (Hoang–Reyhanitabar–Rogaway–Vizár 2015)
// exactly as age's payload: ChaCha20-Poly1305 over 64 KiB chunks, nonce =
// 11-byte big-endian chunk index ‖ last-chunk flag. Unlike Signal's
// AES-CBC + HMAC over the whole file, this streams in constant memory and
// authenticates every chunk on its own, so decryption streams and no
// unauthenticated plaintext is ever released (Magpie's client also checks
// the whole ciphertext's digest before it decrypts anything);
// reordering, truncation and appended data are all detected. The
// key and the SHA-256 of the ciphertext travel in the end-to-end message,
// and the recipient checks that digest, which commits the sender to one
// ciphertext (Poly1305 alone is not key-committing). The server stores the
// ciphertext and learns its size only.
package attach
