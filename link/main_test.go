package link

import (
	"bytes"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fixedKey returns a deterministic key pair (tests and fuzz seeds only).
func fixedKey(seed byte) KeyPair {
	var priv [32]byte
	for i := range priv {
		priv[i] = seed + byte(i)
	}
	kp, err := KeyPairFromPrivate(priv)
	if err != nil {
		panic(err)
	}
	return kp
}

var (
	testServerKey = fixedKey(1)
	testClientKey = fixedKey(100)
)

func acceptAll(reply []byte) func([32]byte, []byte) ([]byte, error) {
	return func([32]byte, []byte) ([]byte, error) { return reply, nil }
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

type serverResult struct {
	conn    *Conn
	err     error
	elapsed time.Duration
	peer    [32]byte
	hello   []byte
}

// serve accepts one connection on ln and runs Server on it.
func serve(ln net.Listener, cfg Config, reply []byte, acceptErr error) <-chan serverResult {
	ch := make(chan serverResult, 1)
	go func() {
		raw, err := ln.Accept()
		if err != nil {
			ch <- serverResult{err: err}
			return
		}
		var res serverResult
		start := time.Now()
		res.conn, res.err = Server(raw, testServerKey, cfg, func(peer [32]byte, hello []byte) ([]byte, error) {
			res.peer, res.hello = peer, bytes.Clone(hello)
			return reply, acceptErr
		})
		res.elapsed = time.Since(start)
		ch <- res
	}()
	return ch
}

// linkPair returns a connected client and server over loopback TCP.
func linkPair(t testing.TB, ccfg, scfg Config) (cli, srv *Conn) {
	t.Helper()
	return wrappedPair(t, ccfg, scfg, nil)
}

// wrappedPair is linkPair with the client's transport passed through wrap
// (if not nil) before the handshake.
func wrappedPair(t testing.TB, ccfg, scfg Config, wrap func(net.Conn) net.Conn) (cli, srv *Conn) {
	t.Helper()
	ln := listen(t)
	ch := serve(ln, scfg, []byte("welcome"), nil)
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	if wrap != nil {
		raw = wrap(raw)
	}
	cli, _, err = Client(raw, testClientKey, testServerKey.Public, []byte("hello"), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	res := <-ch
	if res.err != nil {
		cli.Close()
		t.Fatal(res.err)
	}
	t.Cleanup(func() { cli.Close(); res.conn.Close() })
	return cli, res.conn
}

// firstMessage builds a genuine length-prefixed IK first message.
func firstMessage(t testing.TB, client KeyPair, serverPub [32]byte, hello []byte) []byte {
	t.Helper()
	hs, _, err := newHandshake(client, true, serverPub[:])
	if err != nil {
		t.Fatal(err)
	}
	msg, _, _, err := hs.WriteMessage(nil, hello)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{byte(len(msg) >> 8), byte(len(msg))}, msg...)
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}
