package client_test

import (
	"path/filepath"
	"testing"

	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/client/storetest"
)

// Both stores the client ships keep the Store contract.
func TestStoreContract(t *testing.T) {
	t.Parallel()
	t.Run("SQLite", func(t *testing.T) {
		storetest.Run(t, func(t *testing.T) client.Store {
			s, err := client.NewSQLiteStore(filepath.Join(t.TempDir(), client.StoreFileName))
			if err != nil {
				t.Fatal(err)
			}
			return s
		})
	})
	t.Run("Memory", func(t *testing.T) {
		storetest.Run(t, func(*testing.T) client.Store { return client.NewMemoryStore() })
	})
}
