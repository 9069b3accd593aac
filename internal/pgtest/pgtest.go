// Package pgtest gives tests a fresh PostgreSQL database each.
//
// With MAGPIE_POSTGRES_URL set, the databases are created on that server.
// Otherwise the first test that asks starts a throwaway cluster for the
// whole test binary: initdb into a temporary directory and postgres
// listening on a unix socket in it only (no TCP port), as the postgres OS
// user when the tests run as root (initdb and postgres refuse root). Main
// stops it. Without PostgreSQL's binaries the tests skip, unless
// MAGPIE_REQUIRE_POSTGRES=1, which makes them fail.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// BinDir is where PostgreSQL 15's binaries are on Debian.
const BinDir = "/usr/lib/postgresql/15/bin"

var (
	mu       sync.Mutex
	cluster  *server // nil until started
	admin    string  // URL of the maintenance database
	setupErr error
	started  bool
	templ    = map[string]bool{} // template databases made, by name
	nextDB   atomic.Int64
)

type server struct {
	dir   string
	bin   string
	cred  *syscall.Credential // the postgres user's, when this process is root
	cmd   *exec.Cmd
	fsync bool
	conf  []string // more postgres flags (-c name=value)
}

// Main runs the tests and then stops the cluster, if one was started, and
// returns m.Run's code.
func Main(m *testing.M) int {
	code := m.Run()
	mu.Lock()
	defer mu.Unlock()
	if err := dropTemplates(); err != nil {
		fmt.Fprintln(os.Stderr, "pgtest:", err)
	}
	if cluster != nil {
		if err := cluster.stop(); err != nil {
			fmt.Fprintln(os.Stderr, "pgtest:", err)
			code = 1
		}
		cluster = nil
	}
	return code
}

// ServerPID returns the process id of the postmaster of the cluster this
// package started, or 0 if none runs (not yet, or MAGPIE_POSTGRES_URL's
// server): benchmarks add its processes' CPU to their own.
func ServerPID() int {
	mu.Lock()
	defer mu.Unlock()
	if cluster == nil {
		return 0
	}
	return cluster.cmd.Process.Pid
}

// Options say how a cluster of this package's own runs.
type Options struct {
	// Fsync keeps fsync on (benchmarks of the commit path); tests turn it
	// off (start).
	Fsync bool
}

// NewDatabase returns the URL of a new, empty database for t, created from
// a template that prepare (called once per template name and test binary
// with the template's URL) brings to the state every test starts from,
// e.g. by running migrations. The database is dropped when t ends.
func NewDatabase(t testing.TB, name string, prepare func(url string) error) string {
	t.Helper()
	return NewDatabaseOpts(t, name, prepare, Options{})
}

// NewDatabaseOpts is NewDatabase with options for a cluster it starts.
func NewDatabaseOpts(t testing.TB, name string, prepare func(url string) error, o Options) string {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if !started {
		started = true
		admin, setupErr = setup(o)
	}
	if errors.Is(setupErr, errNoBinaries) {
		skipWithout(t, setupErr, "set MAGPIE_POSTGRES_URL, or install postgresql-15")
	}
	if setupErr != nil {
		t.Fatalf("pgtest: %v", setupErr)
	}
	ctx := context.Background()
	if o.Fsync && cluster != nil && !cluster.fsync {
		// fsync is reloadable: a benchmark after the tests gets it on.
		for _, q := range []string{"ALTER SYSTEM SET fsync = on", "ALTER SYSTEM SET full_page_writes = on", "SELECT pg_reload_conf()"} {
			if err := exec1(ctx, admin, q); err != nil {
				t.Fatalf("pgtest: %v", err)
			}
		}
		cluster.fsync = true
	}
	tmpl := fmt.Sprintf("magpie_tmpl_%s_%d", name, os.Getpid())
	if !templ[tmpl] {
		if err := exec1(ctx, admin, "CREATE DATABASE "+tmpl); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
		templ[tmpl] = true
		if err := prepare(withDB(admin, tmpl)); err != nil {
			t.Fatalf("pgtest: prepare template: %v", err)
		}
	}
	db := fmt.Sprintf("magpie_test_%d_%d", os.Getpid(), nextDB.Add(1))
	if err := exec1(ctx, admin, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", db, tmpl)); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() {
		if err := exec1(context.Background(), admin, "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)"); err != nil {
			t.Errorf("pgtest: %v", err)
		}
	})
	return withDB(admin, db)
}

func dropTemplates() error {
	var errs []error
	for name := range templ {
		errs = append(errs, exec1(context.Background(), admin, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"))
	}
	templ = map[string]bool{}
	return errors.Join(errs...)
}

// exec1 runs one statement on its own connection to url.
func exec1(ctx context.Context, url, sql string) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, sql); err != nil {
		return fmt.Errorf("%s: %w", sql, err)
	}
	return nil
}

// withDB returns url naming database db instead.
func withDB(raw, db string) string {
	u, err := url.Parse(raw)
	if err != nil {
		panic(err) // made or checked by setup
	}
	u.Path = "/" + db
	return u.String()
}

var errNoBinaries = errors.New("no PostgreSQL binaries")

// setup returns the maintenance database's URL: MAGPIE_POSTGRES_URL's
// server, or a cluster it starts.
func setup(o Options) (string, error) {
	if u := os.Getenv("MAGPIE_POSTGRES_URL"); u != "" {
		if _, err := url.Parse(u); err != nil {
			return "", fmt.Errorf("MAGPIE_POSTGRES_URL: %w", err)
		}
		return u, nil
	}
	bin, err := binDir()
	if err != nil {
		return "", err
	}
	s, err := start(bin, o)
	if err != nil {
		return "", err
	}
	cluster = s
	return s.url(), nil
}

// binDir is where PostgreSQL's programs are: BinDir, or initdb's
// directory on PATH.
func binDir() (string, error) {
	if _, err := os.Stat(filepath.Join(BinDir, "initdb")); err == nil {
		return BinDir, nil
	}
	p, err := exec.LookPath("initdb")
	if err != nil {
		return "", fmt.Errorf("%w: no %s/initdb and none on PATH", errNoBinaries, BinDir)
	}
	return filepath.Dir(p), nil
}

// start runs initdb and postgres in a new temporary directory.
func start(bin string, o Options) (*server, error) {
	s, err := newServer(bin, o)
	if err != nil {
		return nil, err
	}
	if err := s.initdb(); err != nil {
		os.RemoveAll(s.dir)
		return nil, err
	}
	if err := s.launch(); err != nil {
		os.RemoveAll(s.dir)
		return nil, err
	}
	return s, nil
}

// newServer makes a new temporary directory for a cluster, owned by the
// postgres user if this process is root.
func newServer(bin string, o Options) (*server, error) {
	dir, err := os.MkdirTemp("", "magpie-pg-")
	if err != nil {
		return nil, err
	}
	s := &server{dir: dir, bin: bin, fsync: o.Fsync}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("running as root, and initdb refuses root: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		s.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	return s, nil
}

// initdb makes the cluster's data directory.
func (s *server) initdb() error {
	if out, err := s.command("initdb", "-D", s.data(), "-U", "postgres", "--auth=trust", "-E", "UTF8",
		"--locale=C", "--no-sync").CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	return nil
}

// data is the cluster's data directory.
func (s *server) data() string { return filepath.Join(s.dir, "data") }

// command is one of PostgreSQL's programs, run as the postgres user if
// this process is root.
func (s *server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(s.bin, name), args...)
	cmd.Dir = s.dir // the test's directory may be closed to the postgres user
	// Pdeathsig: a test binary that is killed takes the cluster with
	// it (its backends exit when the postmaster goes).
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// url is the URL of the cluster's postgres database.
func (s *server) url() string {
	return (&url.URL{Scheme: "postgres", User: url.User("postgres"), Path: "/postgres",
		RawQuery: url.Values{"host": {s.dir}}.Encode()}).String()
}

// launch starts postgres on the cluster's data and waits until it takes
// connections.
func (s *server) launch() error {
	fsync := "off"
	if s.fsync {
		fsync = "on"
	}
	// fsync=off only for this throwaway cluster, which no test survives:
	// the tests crash processes, not the machine, and the durability of
	// a commit is PostgreSQL's own, not the store's. synchronous_commit
	// stays on, as the store requires.
	log, err := os.OpenFile(filepath.Join(s.dir, "postgres.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	defer log.Close()
	cmd := s.command("postgres", append([]string{"-D", s.data(), "-k", s.dir, "-c", "listen_addresses=",
		"-c", "fsync=" + fsync, "-c", "full_page_writes=" + fsync, "-c", "max_connections=200"}, s.conf...)...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	s.cmd = cmd
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		conn, err := pgx.Connect(ctx, s.url())
		cancel()
		if err == nil {
			conn.Close(context.Background())
			return nil
		}
		if time.Now().After(deadline) {
			logText, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
			s.halt(syscall.SIGINT)
			return fmt.Errorf("postgres did not start: %w\n%s", err, logText)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// halt sends postgres sig (SIGINT: a fast shutdown; SIGQUIT: an
// immediate one, as after a crash) and waits for it to exit.
func (s *server) halt(sig syscall.Signal) error {
	var errs []error
	if err := s.cmd.Process.Signal(sig); err != nil {
		errs = append(errs, err)
	}
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		<-done
		errs = append(errs, errors.New("postgres did not stop in 30s; killed"))
	}
	return errors.Join(errs...)
}

// skipWithout skips t for want of PostgreSQL's programs (err says what is
// missing; hint, what to do), or fails it with MAGPIE_REQUIRE_POSTGRES=1.
func skipWithout(t testing.TB, err error, hint string) {
	t.Helper()
	if os.Getenv("MAGPIE_REQUIRE_POSTGRES") == "1" {
		t.Fatalf("pgtest: %v, and MAGPIE_REQUIRE_POSTGRES=1", err)
	}
	t.Skipf("pgtest: %v (%s)", err, hint)
}

// stop shuts the cluster down (fast: clients disconnected), if it runs, and
// removes it.
func (s *server) stop() error {
	var err error
	if s.cmd != nil && s.cmd.ProcessState == nil { // running
		err = s.halt(syscall.SIGINT)
	}
	return errors.Join(err, os.RemoveAll(s.dir))
}
