package pgtest

import (
	"fmt"
	"os"
	"testing"

	"go.uber.org/goleak"
)

// MainNoLeaks is Main, then a check for goroutines the tests left running
// (a pool not closed), once the cluster is stopped; for a TestMain:
// os.Exit(pgtest.MainNoLeaks(m)).
func MainNoLeaks(m *testing.M) int {
	code := Main(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	return code
}
