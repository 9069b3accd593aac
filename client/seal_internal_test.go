package client

import (
	"context"
	"testing"
)

// An empty value, sealed, reads back as an empty value, never as none:
// the indexes that mark "seen" with an empty value depend on it.
func TestSealedEmptyValueIsPresent(t *testing.T) {
	seal, _, err := KeyUnlocker([32]byte{7}).Create()
	if err != nil {
		t.Fatal(err)
	}
	st := NewMemoryStore()
	ctx := context.Background()
	err = st.Update(ctx, func(w Tx) error { return sealedTx{r: w, w: w, s: seal}.Put(nsGroupGiven, "k", []byte{}) })
	if err != nil {
		t.Fatal(err)
	}
	err = st.View(ctx, func(r ReadTx) error {
		v, err := sealedTx{r: r, s: seal}.Get(nsGroupGiven, "k")
		if v == nil || len(v) != 0 {
			t.Errorf("Get = %v, want an empty non-nil value", v)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
