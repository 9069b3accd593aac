package engine_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/magpie-im/magpie/internal/engine"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/server"
)

// The engine answers only this user's processes: with the socket's file
// permissions opened up on purpose, another user still gets no answer,
// because the engine checks the caller's uid (SO_PEERCRED).
func TestSocketRefusesOtherUsers(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root, to run a process as another user")
	}
	s := servertest.Start(t, server.Config{})
	alice := user(t, s, "alice")
	path, err := engine.SocketPath(alice.Engine.Client().Home())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Dir(path), path} {
		if err := os.Chmod(p, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	// The test binary, where another user may run it.
	dir, err := os.MkdirTemp("", "asker")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "asker")
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	ask := func(uid uint32) string {
		cmd := exec.Command(bin, "-test.run=^TestHelperAskEngine$")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "MAGPIE_ASK_SOCKET="+path)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		out, err := cmd.CombinedOutput()
		return fmt.Sprintf("%s (%v)", out, err)
	}
	if out := ask(0); !strings.Contains(out, "ANSWER: HTTP/1.1 200") {
		t.Fatalf("this user was not answered: %s", out)
	}
	if out := ask(65534); strings.Contains(out, "ANSWER: HTTP") || !strings.Contains(out, "NO ANSWER") {
		t.Fatalf("another user (nobody) was answered: %s", out)
	}
}

// TestHelperAskEngine is run as a child process by the test above.
func TestHelperAskEngine(t *testing.T) {
	path := os.Getenv("MAGPIE_ASK_SOCKET")
	if path == "" {
		t.Skip("only a helper")
	}
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	if err != nil {
		fmt.Println("NO ANSWER:", err)
		return
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprint(c, "GET /api/v1/status HTTP/1.1\r\nHost: engine\r\n\r\n")
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		fmt.Println("NO ANSWER:", err)
		return
	}
	fmt.Println("ANSWER:", strings.TrimSpace(line))
}
