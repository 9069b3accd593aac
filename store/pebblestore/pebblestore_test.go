package pebblestore_test

import (
	"context"
	"errors"
	"testing"

	"go.uber.org/goleak"

	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/store/pebblestore"
	"github.com/magpie-im/magpie/store/storetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// open opens the store in dir and closes it when t ends.
func open(t testing.TB, dir string) *pebblestore.Store {
	t.Helper()
	s, err := pebblestore.Open(dir, pebblestore.Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Harness {
		dir := t.TempDir()
		s := open(t, dir)
		return storetest.Harness{
			Store: s,
			Reopen: func(t *testing.T) storetest.Store {
				if err := s.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				return open(t, dir)
			},
		}
	})
}

// A key looked up before it was registered is found once it is: the
// handshake's device cache forgets what it found missing (with the
// registration racing lookups, which the race detector watches).
func TestDeviceCacheSeesRegistrations(t *testing.T) {
	s := open(t, t.TempDir())
	ctx := context.Background()
	k1, k2 := [store.KeySize]byte{1}, [store.KeySize]byte{2}
	for _, k := range [][store.KeySize]byte{k1, k2} {
		if _, err := s.DeviceByKey(ctx, k); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("DeviceByKey of an unknown key: %v, want ErrNotFound", err)
		}
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() { // lookups racing the registrations
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
				s.DeviceByKey(ctx, k1)
				s.DeviceByKey(ctx, k2)
			}
		}
	}()
	if _, err := s.CreateUser(ctx, "alice", k1, now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddDevice(ctx, "alice", k2, now); err != nil {
		t.Fatal(err)
	}
	close(stop)
	<-done
	for i, k := range [][store.KeySize]byte{k1, k2} {
		d, err := s.DeviceByKey(ctx, k)
		if err != nil || d.User != "alice" || d.Device != uint32(i+1) {
			t.Errorf("DeviceByKey after registering device %d: %+v, %v", i+1, d, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DeviceByKey(ctx, k1); !errors.Is(err, store.ErrClosed) {
		t.Errorf("DeviceByKey on a closed store: %v, want ErrClosed", err)
	}
}
