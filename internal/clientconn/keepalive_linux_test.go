package clientconn

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"
)

// The default dialer turns on TCP keepalive with transport.ClientKeepAlive's
// timings, as the kernel sees them on a real socket: that is what keeps NAT
// mappings open between the client's rare pings.
func TestDefaultDialerKeepsTCPAlive(t *testing.T) {
	var opts DialOptions
	opts.setDefaults()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, err := opts.Dialer.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	raw, err := nc.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name       string
		level, opt int
		value      int
	}{
		{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 25},
		{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 10},
		{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 3},
	}
	for _, w := range want {
		var got int
		var gerr error
		if err := raw.Control(func(fd uintptr) { got, gerr = syscall.GetsockoptInt(int(fd), w.level, w.opt) }); err != nil {
			t.Fatal(err)
		}
		if gerr != nil {
			t.Fatalf("%s: %v", w.name, gerr)
		}
		if got != w.value {
			t.Errorf("%s = %d, want %d", w.name, got, w.value)
		}
	}
	if opts.Link.KeepaliveInterval != DefaultKeepalive || opts.Link.PongTimeout <= 0 || opts.Link.IdleTimeout <= DefaultKeepalive {
		t.Errorf("link defaults: ping every %v, pong within %v, idle %v", opts.Link.KeepaliveInterval, opts.Link.PongTimeout, opts.Link.IdleTimeout)
	}
}
