package main

import (
	"bufio"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestAttachment2GiBConstantMemory sends a 2 GiB file through the real
// binaries and checks that the server's and the clients' resident memory
// stays under 100 MiB (sampled from /proc every 50 ms). It takes minutes
// and 4 GiB of disk: MAGPIE_SOAK=1 runs it (see docs/BENCHMARKS.md).
func TestAttachment2GiBConstantMemory(t *testing.T) {
	if os.Getenv("MAGPIE_SOAK") == "" {
		t.Skip("set MAGPIE_SOAK=1 to run the 2 GiB soak test")
	}
	srv := serveOnFreePort(t, t.TempDir())
	alice := newUser(t, srv, "alice")
	bob := newUser(t, srv, "bob")
	file := filepath.Join(t.TempDir(), "big.bin")
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(2 << 30); err != nil { // sparse: reads as zeros, encrypted it is not
		t.Fatal(err)
	}
	f.Close()

	var serverPeak, clientPeak int64
	watch := func(p *proc, peak *int64) chan struct{} {
		stop := make(chan struct{})
		go func() {
			for {
				if kb := rssKiB(p.cmd.Process.Pid); kb > *peak {
					*peak = kb
				}
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
		return stop
	}
	stopServer := watch(srv.proc, &serverPeak)
	began := time.Now()
	sender := start(t, nil, "--home", alice, "send", "bob", "--file", file)
	stopSender := watch(sender, &clientPeak)
	if code, ok := sender.waitExit(30 * time.Minute); !ok || code != 0 {
		t.Fatalf("send: %d %v\n%s", code, ok, sender)
	}
	close(stopSender)
	up := time.Since(began)
	began = time.Now()
	receiver := start(t, nil, "--home", bob, "inbox", "--downloads", t.TempDir())
	stopReceiver := watch(receiver, &clientPeak)
	if code, ok := receiver.waitExit(30 * time.Minute); !ok || code != 0 {
		t.Fatalf("inbox: %d %v\n%s", code, ok, receiver)
	}
	close(stopReceiver)
	close(stopServer)
	t.Logf("2 GiB: upload %v, download %v; peak RSS server %d MiB, client %d MiB", up.Round(time.Second), time.Since(began).Round(time.Second), serverPeak>>10, clientPeak>>10)
	if serverPeak > 100<<10 || clientPeak > 100<<10 {
		t.Fatalf("peak RSS over 100 MiB: server %d MiB, client %d MiB", serverPeak>>10, clientPeak>>10)
	}
	srv.stop(t)
}

// rssKiB reads a process's peak resident set size (VmHWM) from /proc.
func rssKiB(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n
		}
	}
	return 0
}
