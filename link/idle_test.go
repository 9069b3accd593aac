package link

import (
	"net"
	"runtime"
	"testing"
	"time"
)

// BenchmarkIdleMemory measures the Go memory an idle established link
// costs, reported per pair as heap-B/pair (both ends) and stack-B/pair (the
// server's reader):
//
//	go test -run '^$' -bench IdleMemory -benchtime 2000x ./link/
//
// Each pair has a server Conn with a goroutine parked in ReadMessage (as the
// server runs it) and a client Conn with no reader. Kernel socket buffers
// are not included. b.N is the number of pairs.
func BenchmarkIdleMemory(b *testing.B) {
	t := b
	n := b.N
	ln := listen(t)
	measure := func() (heap, stack uint64) {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc, m.StackInuse
	}
	h0, s0 := measure()
	var clis, srvs []*Conn
	done := make(chan struct{}, n)
	for range n {
		ch := serve(ln, Config{IdleTimeout: time.Hour}, []byte("welcome"), nil)
		raw, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		cli, _, err := Client(raw, testClientKey, testServerKey.Public, []byte("hello"), Config{KeepaliveInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		res := <-ch
		if res.err != nil {
			t.Fatal(res.err)
		}
		srv := res.conn
		go func() {
			for {
				if _, err := srv.ReadMessage(); err != nil {
					done <- struct{}{}
					return
				}
			}
		}()
		// One message each way so the read path has run once.
		cli.WriteMessage([]byte("x"))
		clis, srvs = append(clis, cli), append(srvs, srv)
	}
	time.Sleep(200 * time.Millisecond)
	h1, s1 := measure()
	b.ReportMetric(float64(h1-h0)/float64(n), "heap-B/pair")
	b.ReportMetric(float64(s1-s0)/float64(n), "stack-B/pair")
	b.ReportMetric(0, "ns/op")
	for i := range clis {
		clis[i].Close()
		srvs[i].Close()
	}
	for range n {
		<-done
	}
}
