package tlsws

import (
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/magpie-im/magpie/transport/transporttest"
)

// recordProxy forwards TCP connections to backend and reports, per
// connection, the lengths of the TLS records each way after the handshake:
// client records after the client's Finished (its first encrypted record),
// server records read after that Finished went by (the server's own
// handshake flight precedes it causally).
type recordSizes struct{ up, down []int }

func recordProxy(t *testing.T, backend string) (string, <-chan recordSizes) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan recordSizes, 64)
	acceptAll(t, ln, func(c net.Conn, track func(net.Conn)) {
		b, err := net.Dial("tcp", backend)
		if err != nil {
			return
		}
		track(b)
		defer b.Close()
		var finished atomic.Bool
		var sizes recordSizes
		var down sync.WaitGroup
		down.Add(1)
		go func() {
			defer down.Done()
			defer c.Close()
			copyRecords(c, b, func(typ byte, n int) {
				if finished.Load() && typ == 23 {
					sizes.down = append(sizes.down, n)
				}
			})
		}()
		seen := 0
		copyRecords(b, c, func(typ byte, n int) {
			if typ != 23 {
				return
			}
			if seen++; seen == 1 {
				finished.Store(true)
				return
			}
			sizes.up = append(sizes.up, n)
		})
		b.Close()
		down.Wait()
		out <- sizes
	})
	return ln.Addr().String(), out
}

// copyRecords copies TLS records from src to dst, calling seen for each
// before forwarding it.
func copyRecords(dst io.Writer, src io.Reader, seen func(typ byte, n int)) {
	hdr := make([]byte, 5)
	for {
		if _, err := io.ReadFull(src, hdr); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint16(hdr[3:]))
		rec := make([]byte, 5+n)
		copy(rec, hdr)
		if _, err := io.ReadFull(src, rec[5:]); err != nil {
			return
		}
		seen(hdr[0], n)
		if _, err := dst.Write(rec); err != nil {
			return
		}
	}
}

// TestNoFixedShapeAfterHandshake: over 30 connections that all send and
// receive the same messages, none of the first six records in either
// direction has a size that another connection's record at that position
// had.
func TestNoFixedShapeAfterHandshake(t *testing.T) {
	ln := serve(t, serverConfig(t))
	proxy, sizes := recordProxy(t, ln.Addr().String())
	const conns, records = 30, 6
	var up, down [records]map[int]int
	for i := range records {
		up[i], down[i] = map[int]int{}, map[int]int{}
	}
	msg := []byte("the same 40-byte message on every conn.")
	for range conns {
		c := dial(t, proxy, clientConfig(t))
		for range records {
			transporttest.Echo(t, c, msg)
		}
		c.Close()
		s := <-sizes
		if len(s.up) < records || len(s.down) < records {
			t.Fatalf("records after the handshake: %d up, %d down; want %d each", len(s.up), len(s.down), records)
		}
		for i := range records {
			up[i][s.up[i]]++
			down[i][s.down[i]]++
		}
	}
	for i := range records {
		for dir, m := range map[string]map[int]int{"client→server": up[i], "server→client": down[i]} {
			for size, n := range m {
				if n > 1 {
					t.Errorf("%s record %d: %d bytes in %d of %d connections", dir, i+1, size, n, conns)
				}
			}
		}
	}
	t.Logf("record 1..%d sizes, client→server, first connections: %v; server→client: %v", records, keys(up[1]), keys(down[1]))
}

func keys(m map[int]int) []int {
	var k []int
	for x := range m {
		k = append(k, x)
		if len(k) == 8 {
			break
		}
	}
	return k
}
