// Package link is the encrypted, authenticated, framed channel between one
// device and the Magpie server: a Noise session (Noise Protocol Framework,
// revision 34) run over any stream transport (net.Conn).
//
// Suite: Noise_IK_25519_ChaChaPoly_BLAKE2b. IK because the client always
// knows the server's static key (from the invite) and so can encrypt its own
// static key and first payload in the first message: one round trip, and
// the client's identity is hidden from passive observers. X25519 and
// ChaCha20-Poly1305 are fast in pure Go without AES-NI assumptions; BLAKE2b is
// the hash WhatsApp's Noise Pipes also chose, and is fast on 64-bit CPUs.
//
// # Wire format
//
// Every Noise message (handshake or transport) is sent as
//
//	uint16 big-endian length || Noise message (length bytes, at most 65535)
//
// (Noise rev. 34, section 13: the application supplies framing). Inside each
// transport message the plaintext is
//
//	type byte || body
//
// with type 0 = ping, 1 = pong, 2 = data (last fragment of an application
// message), 3 = data (more fragments follow). Application messages larger
// than one frame (65518 bytes: 65535 minus the 16-byte tag and the type byte)
// are split into fragments and reassembled up to Config.MaxMessageSize; a
// zero-length message is one empty type-2 frame. Ping and pong bodies are
// ignored (room for padding) and may appear between fragments. Any other type,
// a frame shorter than 17 bytes, or a frame that fails authentication closes
// the connection.
//
// The handshake is IK's two messages (Noise rev. 34 §7.5) with the same
// length prefix and the prologue "magpie/link/1" (§6). The client's hello
// rides in message 1, the server's reply in message 2; each is at most
// Config.MaxHelloSize bytes, so message 1 is 96 to 96+MaxHelloSize bytes long
// and message 2 is 48 to 48+MaxHelloSize.
//
// Transport nonces are never allowed to wrap: a CipherState refuses to use
// n = 2^64-1 (§5.1), and the link then fails with ErrNonceExhausted.
//
// # Keepalive and idle connections
//
// A side with KeepaliveInterval > 0 sends a ping when it has written nothing
// for that long (a time.AfterFunc timer re-armed by every write, not a
// goroutine); the reader of the other side answers with a pong, so both
// sides see traffic. IdleTimeout is enforced with a read deadline armed
// before each frame. An idle Conn holds no buffers: read buffers come from a
// sync.Pool once a header has arrived and go back at the next ReadMessage;
// write buffers (header and ciphertext contiguous, one write, or one writev
// for a batch) are returned after the write. Frames that concurrent writers
// seal while a write is in the kernel leave together in the next write;
// each is still its own Noise message, so coalescing is invisible on the
// wire except in how the bytes are split into segments.
//
// # Probe resistance
//
// A server that receives a first message that is malformed, of impossible
// length, or that does not decrypt sends nothing back. It keeps reading and
// discarding whatever arrives until the connection's handshake deadline (drawn
// at random per connection when it was accepted), then closes: exactly what it
// does when a client sends nothing at all. The close time therefore depends on
// neither the bytes received nor their count. accept rejecting an
// authenticated client is handled the same way, so a probe cannot tell an
// unknown device from a wrong server key. A successful handshake must also
// complete before the deadline.
//
// From the client's side a silent server and one that closes without
// answering are the same: both give ErrHandshakeTimeout, whose text tells
// the user to check the invite's server key and address.
package link
