package blobstore_test

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/magpie-im/magpie/blobstore"
	"github.com/magpie-im/magpie/blobstore/blobstoretest"
)

const (
	killChildEnv = "MAGPIE_BLOBSTORE_KILL_CHILD"
	killSize     = 64 << 20
	killChunk    = 64 << 10
)

// killData is the blob the child uploads, the same in both processes.
func killData() []byte {
	data := make([]byte, killSize)
	r := rand.NewChaCha8([32]byte{'m', 'a', 'g', 'p', 'i', 'e'})
	r.Read(data)
	return data
}

// killChild runs in the child process: it uploads killData and prints
// "id <id>" after Create and "ok <offset>" after every Append returns,
// until it is killed.
func killChild(dir string) int {
	s, err := blobstore.Open(dir, blobstore.Options{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	data := killData()
	id, err := s.Create("alice", killSize)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println("id", id)
	var off int64
	for off < killSize {
		off, err = s.Append(id, "alice", off, data[off:off+killChunk])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		fmt.Println("ok", off)
	}
	time.Sleep(time.Minute) // wait for the kill
	return 0
}

// TestKill9 kills a process in the middle of an upload and checks that
// every offset it reported as confirmed survived.
func TestKill9(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), killChildEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var id blobstore.ID
	var confirmed int64
	lines := 0
	killed := false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			t.Fatalf("child printed %q", sc.Text())
		}
		switch f[0] {
		case "id":
			if id, err = blobstore.ParseID(f[1]); err != nil {
				t.Fatal(err)
			}
		case "ok":
			n, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			confirmed = max(confirmed, n)
		}
		if lines++; lines == 40 && !killed {
			// Mid-upload: the child is appending as fast as it can.
			cmd.Process.Signal(syscall.SIGKILL)
			killed = true
		}
	}
	// Lines still in the pipe after the kill were confirmed too; the
	// scanner read them all.
	werr := cmd.Wait()
	if !killed {
		t.Fatalf("child finished before it was killed: %v", werr)
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child did not die of SIGKILL: %v", werr)
	}
	if confirmed >= killSize {
		t.Fatalf("child uploaded everything before the kill; the test proves nothing")
	}
	t.Logf("killed after %d bytes confirmed", confirmed)

	s := open(t, dir, blobstore.Options{})
	have, size, complete, err := s.Status(id, "alice")
	if err != nil {
		t.Fatalf("Status after kill: %v", err)
	}
	if have < confirmed || size != killSize || complete {
		t.Fatalf("after kill: %d bytes of %d (complete %v), but %d were confirmed", have, size, complete, confirmed)
	}
	// Finish the upload from where the store says; the digest over the
	// whole blob proves the bytes before it are the ones sent.
	data := killData()
	blobstoretest.Upload(t, s, id, "alice", have, data, blobstore.MaxChunk)
	if err := s.Complete(id, "alice", sha256.Sum256(data)); err != nil {
		t.Fatalf("Complete after kill: %v", err)
	}
}
