package client

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkSQLiteStoreUpdate is the store's share of receiving a message:
// one transaction with the reads and writes the session step and the
// history make (about ten of each), and its durable commit.
func BenchmarkSQLiteStoreUpdate(b *testing.B) {
	st, err := NewSQLiteStore(filepath.Join(b.TempDir(), "client.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	val := make([]byte, 300)
	i := 0
	for b.Loop() {
		i++
		err := st.Update(ctx, func(tx Tx) error {
			for k := range 10 {
				if _, err := tx.Get("ns", fmt.Sprintf("k%d", k)); err != nil {
					return err
				}
			}
			for k := range 10 {
				if err := tx.Put("ns", fmt.Sprintf("k%d", (i+k)%50), val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}
