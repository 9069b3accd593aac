// Package censor is a censor emulator for tests: a loopback middlebox that
// relays TCP connections to Magpie endpoints while applying the blocking
// techniques that national firewalls are documented to use, plus an active
// prober. It is a test harness and is never part of the shipped server.
//
// A Censor is created with New(Config). Each call to Forward starts a relay
// on 127.0.0.1 to one upstream endpoint; every forward of a Censor shares its
// state (rules, black-hole table, event log, recorded first packets). Close
// stops all of it and waits for every goroutine.
//
// Rules (each toggled in Config, several at once; SetConfig, Block and
// Unblock change them at run time for new connections):
//
//  1. Address blocking (Config.BlockAddrs): a connection through a forward
//     whose listen address or upstream address is listed is reset (RST:
//     SetLinger(0) then Close) or black-holed (accepted, never forwarded,
//     never answered), per Config.BlockAction.
//  2. Fully-encrypted-traffic detection (Config.FET), after Wu et al., "How
//     the Great Firewall of China Detects and Blocks Fully Encrypted
//     Traffic", USENIX Security 2023: the first data packet of a connection
//     is exempt if any of the paper's five exemptions holds (FETExempt);
//     otherwise, with probability Config.FETProbability, the flow is
//     black-holed and (client IP, server IP, server port) is put in the
//     black-hole table for Config.BlackholeFor, so that every later
//     connection on that 3-tuple is black-holed too.
//  3. Fingerprint of Magpie's plain tcp transport (Config.TCPFingerprint):
//     the first packet is a 2-byte big-endian length followed by exactly
//     that many bytes, and the length is at least 96 (the smallest Noise IK
//     first message, link/doc.go). See LooksLikeMagpieTCP.
//  4. TLS SNI blocking (Config.BlockSNI): the ClientHello is reassembled
//     (across reads and TLS records), its server_name extracted, and a match
//     is reset with an RST.
//  5. Throttling (Config.ThrottleBytesPerSec): each direction of each flow
//     is limited to that rate with a token bucket (golang.org/x/time/rate).
//
// The server side of a flow, as the censor sees it, is the forward's listen
// address: that is the address the client dialed, as an on-path firewall
// would see it. The upstream address is where the relay really connects.
//
// Active probing: Probe (and Prober.Probe) connect straight to a server and
// send replays of recorded first packets (as is, and with one byte changed),
// random bytes of several lengths, and nothing at all; each reaction (bytes
// received, time to close, FIN or RST or timeout) is compared with the
// reaction to silence. Censor.FirstPackets records the first packet of
// every flow that passes through a forward, so tests can replay them.
//
// Comparison with a real web server: CompareServers sends a suspect server
// and a reference (nginx serving the same site and certificate) the same
// probes in 13 classes plus two per recorded first packet (bare TCP:
// nothing, random bytes of four lengths, plain HTTP, a junk TLS record, an
// ordinary ClientHello, replays as is and altered; after a TLS handshake:
// GET, the h2 preface, a malformed request, nothing, a WebSocket upgrade),
// at the same time, and reports every class whose reactions differ in the
// bytes returned (TLS records by their headers, text with Date masked),
// how the connection ended, or when (beyond a tolerance).
//
// Fingerprints: JA4 computes FoxIO's JA4 of a ClientHello, as a censor
// does to single out clients that are not the browser they claim to be.
//
// # Limitations
//
// Everything happens on loopback with real sockets, so some things can only
// be approximated: a "black hole" accepts the TCP connection (the kernel
// completes the handshake before the relay sees it) and then never forwards
// or answers anything, whereas a real firewall drops the packets so that
// even the TCP handshake times out. The relay holds the client's first
// packet until it has been inspected (and, for TLS, until the whole
// ClientHello has arrived, or FirstPacketTimeout), and connects the
// server-to-client direction only after that, so a server-speaks-first
// protocol waits up to FirstPacketTimeout; Magpie's transports, TLS and HTTP
// are all client-speaks-first. A flow that is blocked never delivers its
// first packet to the server (a real firewall usually lets that one through).
package censor
