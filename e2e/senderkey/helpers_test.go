package senderkey

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"

	"go.uber.org/goleak"
)

// The interop tests start the libsignal harness (a child process and a
// goroutine that reaps it).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// sender is a device sending on its own chain for one distribution id.
type sender struct {
	id  DistributionID
	rec Record
}

func newSender(t testing.TB) *sender {
	t.Helper()
	id, err := NewDistributionID(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := &sender{id: id}
	s.distribution(t)
	return s
}

// newSenderOn makes a sender whose chain has the given id.
func newSenderOn(t testing.TB, id DistributionID, chainID uint32) *sender {
	t.Helper()
	s := &sender{id: id}
	s.distribution(t)
	st := *s.rec.states[0]
	st.chainID = chainID
	s.rec.states[0] = &st
	return s
}

func (s *sender) distribution(t testing.TB) DistributionMessage {
	t.Helper()
	m, err := s.rec.DistributionMessage(s.id, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (s *sender) send(t testing.TB, text string) []byte {
	t.Helper()
	b, err := s.rec.Encrypt(s.id, []byte(text), rand.Reader)
	if err != nil {
		t.Fatalf("encrypting %q: %v", text, err)
	}
	return b
}

// skip advances the sender's chain by n messages that nobody receives.
func (s *sender) skip(t testing.TB, n uint32) {
	t.Helper()
	st := s.rec.states[0]
	c := st.chain
	for range n {
		var err error
		if c, err = c.Next(); err != nil {
			t.Fatal(err)
		}
	}
	s.rec.replace(0, st.with(c, nil))
}

// receiver returns a Record that has processed the sender's distribution
// message.
func (s *sender) receiver(t testing.TB) *Record {
	t.Helper()
	r := new(Record)
	r.Process(s.distribution(t))
	return r
}

// decrypt parses and decrypts a message, round-tripping the Record through
// its encoding after a success (so that every step also proves what is
// stored resumes) and checking that a failure left it unchanged.
func decrypt(t testing.TB, r *Record, b []byte) ([]byte, error) {
	t.Helper()
	before := marshal(t, r)
	m, err := ParseMessage(b)
	if err != nil {
		return nil, err
	}
	pt, err := r.Decrypt(m)
	if err != nil {
		if after := marshal(t, r); !bytes.Equal(before, after) {
			t.Fatalf("a failed Decrypt (%v) changed the Record", err)
		}
		return nil, err
	}
	var fresh Record
	if err := fresh.UnmarshalBinary(marshal(t, r)); err != nil {
		t.Fatalf("UnmarshalBinary: %v", err)
	}
	*r = fresh
	return pt, nil
}

func mustDecrypt(t testing.TB, r *Record, b []byte, want string) {
	t.Helper()
	pt, err := decrypt(t, r, b)
	if err != nil {
		t.Fatalf("decrypting %q: %v", want, err)
	}
	if string(pt) != want {
		t.Fatalf("decrypted %q, want %q", pt, want)
	}
}

func mustFail(t testing.TB, r *Record, b []byte, want error) error {
	t.Helper()
	pt, err := decrypt(t, r, b)
	if !errors.Is(err, want) {
		t.Fatalf("decrypt: %q, %v; want %v", pt, err, want)
	}
	return err
}

func marshal(t testing.TB, r *Record) []byte {
	t.Helper()
	b, err := r.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
