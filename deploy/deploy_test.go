// Package deploy holds the files an operator installs (systemd units, a
// NATS configuration, PostgreSQL's setup); its test checks that they parse
// and name only flags that magpie serve has.
package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/magpie-im/magpie/internal/cli"
)

// The NATS configuration is the three-server cluster the docs describe.
func TestNATSConfig(t *testing.T) {
	t.Setenv("NATS_NAME", "nats-2")
	t.Setenv("MAGPIE_NATS_PASSWORD", "secret")
	o, err := natsserver.ProcessConfigFile("cluster/nats.conf")
	if err != nil {
		t.Fatal(err)
	}
	if o.ServerName != "nats-2" || o.Cluster.Name != "magpie" || len(o.Routes) != 3 || o.Username != "magpie" || o.Password != "secret" {
		t.Fatalf("nats.conf: name %q, cluster %q, %d routes, user %q, password set %v", o.ServerName, o.Cluster.Name, len(o.Routes), o.Username, o.Password != "")
	}
}

// env reads a systemd EnvironmentFile.
func env(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(f))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			m[k] = v
		}
	}
	return m
}

// The units start magpie serve with flags it has, and systemd accepts them.
func TestUnits(t *testing.T) {
	var help, stderr bytes.Buffer
	if code := cli.Main(context.Background(), []string{"serve", "--help"}, &help, &stderr); code != 0 {
		t.Fatalf("serve --help: exit %d: %s", code, stderr.String())
	}
	vars := env(t, "cluster/magpie.env")
	ref := regexp.MustCompile(`\$\{?([A-Z_]+)\}?`)
	for _, unit := range []string{"systemd/magpie.service", "cluster/magpie-node.service"} {
		b, err := os.ReadFile(unit)
		if err != nil {
			t.Fatal(err)
		}
		var cmdline string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "ExecStart=") {
				cmdline = strings.TrimPrefix(l, "ExecStart=")
			}
		}
		cmdline = ref.ReplaceAllStringFunc(cmdline, func(m string) string {
			v, ok := vars[ref.FindStringSubmatch(m)[1]]
			if !ok {
				t.Errorf("%s: %s is not in magpie.env", unit, m)
			}
			return v
		})
		args := strings.Fields(cmdline)
		if len(args) < 2 || args[1] != "serve" {
			t.Fatalf("%s: ExecStart %q does not run magpie serve", unit, cmdline)
		}
		for _, a := range args[2:] {
			if name, _, _ := strings.Cut(a, "="); strings.HasPrefix(name, "--") && !strings.Contains(help.String(), name+" ") {
				t.Errorf("%s: magpie serve has no flag %s", unit, name)
			}
		}
		if _, err := exec.LookPath("systemd-analyze"); err == nil {
			out, _ := exec.Command("systemd-analyze", "verify", unit).CombinedOutput()
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if l != "" && !strings.Contains(l, "/usr/local/bin/magpie is not executable") {
					t.Errorf("systemd-analyze verify %s: %s", unit, l)
				}
			}
		}
	}
}
