package group

import (
	"crypto/rand"
	"errors"
	"testing"
)

func TestLogProof(t *testing.T) {
	id, err := NewID(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	link, pub, err := NewLink(id, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	st := &State{ID: id, LinkKey: &pub}
	proof, err := link.LogProof("dave", rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CheckLogProof("dave", proof); err != nil {
		t.Fatalf("a good proof: %v", err)
	}
	// Bound to the user, the group and the current link.
	if err := st.CheckLogProof("erin", proof); !errors.Is(err, ErrBadSignature) {
		t.Errorf("another user's proof: %v, want ErrBadSignature", err)
	}
	other, _ := NewID(rand.Reader)
	if err := (&State{ID: other, LinkKey: &pub}).CheckLogProof("dave", proof); !errors.Is(err, ErrBadSignature) {
		t.Errorf("another group: %v, want ErrBadSignature", err)
	}
	_, pub2, _ := NewLink(id, rand.Reader)
	if err := (&State{ID: id, LinkKey: &pub2}).CheckLogProof("dave", proof); !errors.Is(err, ErrBadSignature) {
		t.Errorf("after a new link: %v, want ErrBadSignature", err)
	}
	if err := (&State{ID: id}).CheckLogProof("dave", proof); !errors.Is(err, ErrForbidden) {
		t.Errorf("links off: %v, want ErrForbidden", err)
	}
	if err := st.CheckLogProof("dave", proof[:63]); !errors.Is(err, ErrForbidden) {
		t.Errorf("short proof: %v, want ErrForbidden", err)
	}
	bad := append([]byte(nil), proof...)
	bad[5] ^= 1
	if err := st.CheckLogProof("dave", bad); !errors.Is(err, ErrBadSignature) {
		t.Errorf("flipped bit: %v, want ErrBadSignature", err)
	}
}
