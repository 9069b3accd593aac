package vault

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// openPTY returns the controller and terminal ends of a new pseudo-terminal.
func openPTY(t *testing.T) (ctl, tty *os.File) {
	t.Helper()
	ctl, err := os.OpenFile("/dev/ptmx", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals: %v", err)
	}
	t.Cleanup(func() { ctl.Close() })
	fd := int(ctl.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Skipf("ptsname: %v", err)
	}
	tty, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pts: %v", err)
	}
	t.Cleanup(func() { tty.Close() })
	// Drain whatever the terminal echoes so it never blocks.
	go io.Copy(io.Discard, ctl) //nolint:errcheck // ends when ctl is closed
	return ctl, tty
}

func TestResolveRealTerminal(t *testing.T) {
	unsetEnv(t)
	ctl, tty := openPTY(t)
	if _, err := ctl.Write([]byte("tty pass\ntty pass\n")); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	v, h, err := ResolveNew(tty, &stderr, testParams)
	if err != nil {
		t.Fatalf("ResolveNew on a terminal: %v", err)
	}
	if bytes.Contains(stderr.Bytes(), []byte("tty pass")) {
		t.Fatal("passphrase echoed to stderr")
	}
	if _, err := OpenWithPassphrase([]byte("tty pass"), h); err != nil {
		t.Fatalf("terminal passphrase not used as typed: %v", err)
	}

	if _, err := ctl.Write([]byte("tty pass\n")); err != nil {
		t.Fatal(err)
	}
	v2, err := ResolveExisting(tty, io.Discard, h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v2.Open(nil, v.Seal(nil, []byte("z"))); err != nil {
		t.Fatal(err)
	}
}
