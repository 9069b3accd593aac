package signupcodes_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/magpie-im/magpie/internal/signupcodes"
	"github.com/magpie-im/magpie/internal/signupcodes/signupcodestest"
)

func TestConformance(t *testing.T) {
	signupcodestest.Run(t, func(t *testing.T) (a, b signupcodes.Codes) {
		dir := t.TempDir()
		return signupcodes.Book{Dir: dir}, signupcodes.Book{Dir: dir}
	})
}

// The file holds hashes, not codes.
func TestFileHoldsHashes(t *testing.T) {
	b := signupcodes.Book{Dir: t.TempDir()}
	code, err := b.Add(2)
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(b.Dir, "signup-codes.json"))
	if err != nil || strings.Contains(string(data), string(code)) {
		t.Fatalf("the file: %v", err)
	}
}
