package link

import (
	"net"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"
)

// TestIdleMemory measures the Go memory an idle established link costs:
// LINK_MEASURE_IDLE=2000 go test -run TestIdleMemory -v ./link/
// Each pair has a server Conn with a goroutine parked in ReadMessage (as the
// server will run it) and a client Conn with no reader. Kernel socket
// buffers are not included.
func TestIdleMemory(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("LINK_MEASURE_IDLE"))
	if n <= 0 {
		t.Skip("set LINK_MEASURE_IDLE=<pairs> to measure")
	}
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
	t.Logf("%d idle pairs, per pair: heap %d B (both ends), reader stack %d B",
		n, (h1-h0)/uint64(n), (s1-s0)/uint64(n))
	for i := range clis {
		clis[i].Close()
		srvs[i].Close()
	}
	for range n {
		<-done
	}
}
