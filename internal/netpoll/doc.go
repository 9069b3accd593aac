// Package netpoll lets a server stop spending a goroutine on a connection
// that has gone quiet, and get one back when bytes arrive.
//
// A Go server normally keeps one goroutine blocked in Read per connection.
// That goroutine's stack (8 KiB once a read path has grown it) is most of
// what an idle connection costs, and the runtime does not shrink it while
// the goroutine waits. For a server holding tens of thousands of mostly
// idle clients, the goroutine is the thing to remove.
//
// The pattern (the one gobwas/ws and mailru/easygo used for "a million
// WebSockets in Go"): the reader waits a short while for more bytes
// (WaitReadable); if none come it hands the connection's descriptor to a
// Poller and returns, ending its goroutine. One goroutine per Poller waits
// for all parked descriptors at once (one epoll(7) set) and, when one
// becomes readable (or hangs up), hands it to a goroutine to read it: an
// idle one left from an earlier wake, or a new one. The
// descriptor stays registered with the Go runtime's own poller as well, so
// reads and writes on the net.Conn work exactly as before.
//
// This only works when every byte the reader has not consumed is still in
// the kernel: a caller must park only connections whose reader keeps no
// user-space buffer (a *net.TCPConn read frame by frame, for instance, but
// not a TLS connection).
//
// On systems other than Linux, New returns ErrUnsupported and callers keep
// their blocked goroutine.
package netpoll

import "errors"

// ErrUnsupported is returned by New where there is no epoll.
var ErrUnsupported = errors.New("netpoll: not supported on this system")

// ErrClosed is returned by Wait after Close.
var ErrClosed = errors.New("netpoll: poller closed")
