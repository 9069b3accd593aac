package senderkey

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/magpie-im/magpie/e2e/curve"
)

// writeCorpus regenerates testdata/fuzz from real messages and records:
//
//	go test ./e2e/senderkey -run TestFuzzCorpus -args -write-corpus
var writeCorpus = flag.Bool("write-corpus", false, "regenerate the seed corpus in testdata/fuzz")

// TestFuzzCorpus checks that every fuzz target has its seed corpus (or,
// with -write-corpus, writes it).
func TestFuzzCorpus(t *testing.T) {
	s := newSender(t)
	r := s.receiver(t)
	first := s.send(t, "seed message")
	held := s.send(t, "held back")
	mustDecrypt(t, r, s.send(t, "third"), "third")
	skdm := s.distribution(t).Marshal()
	corpus := map[string]map[string][]byte{
		"FuzzParseDistributionMessage": {"distribution": skdm, "short": skdm[:40]},
		"FuzzParseMessage":             {"message": first, "version2": append([]byte{0x23}, first[1:]...)},
		"FuzzDecrypt":                  {"first": first, "held": held},
		"FuzzUnmarshalRecord":          {"sender": marshal(t, &s.rec), "receiver-skipped": marshal(t, r), "empty": nil},
	}
	for target, seeds := range corpus {
		dir := filepath.Join("testdata", "fuzz", target)
		for name, data := range seeds {
			path := filepath.Join(dir, name)
			if !*writeCorpus {
				if b, err := os.ReadFile(path); err != nil || !bytes.HasPrefix(b, []byte("go test fuzz v1\n[]byte(")) {
					t.Errorf("seed %s: %v", path, err)
				}
				continue
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// parseError fails t unless err is one that the parsers return.
func parseError(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, ErrInvalidMessage) && !errors.Is(err, ErrLegacyVersion) && !errors.Is(err, ErrUnsupportedVersion) {
		t.Fatalf("untyped error %v", err)
	}
}

func FuzzParseDistributionMessage(f *testing.F) {
	f.Add(testDistribution().Marshal())
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseDistributionMessage(b)
		if err != nil {
			parseError(t, err)
			return
		}
		// Re-encoding gives the same fields.
		if m2, err := ParseDistributionMessage(m.Marshal()); err != nil || m2 != m {
			t.Fatalf("re-encoding: %+v, %v", m2, err)
		}
	})
}

func FuzzParseMessage(f *testing.F) {
	f.Add(signMessage(DistributionID{1}, 2, 3, make([]byte, 16), curve.PrivateKey{}, [64]byte{}))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseMessage(b)
		if err != nil {
			parseError(t, err)
			return
		}
		if len(b) < minMessageSize || b[0]>>4 != Version || !bytes.Equal(m.Bytes(), b) {
			t.Fatalf("accepted %x", b)
		}
		re := signMessage(m.DistributionID, m.ChainID, m.Iteration, m.Ciphertext, curve.PrivateKey{}, [64]byte{})
		if m2, err := ParseMessage(re); err != nil || m2.DistributionID != m.DistributionID || m2.ChainID != m.ChainID ||
			m2.Iteration != m.Iteration || !bytes.Equal(m2.Ciphertext, m.Ciphertext) {
			t.Fatalf("re-encoding: %v", err)
		}
	})
}
