package server

import (
	"context"
	"testing"
	"time"

	"github.com/magpie-im/magpie/store"
)

// usersOnly is a store that answers User from a map and nothing else.
type usersOnly struct {
	store.Store
	users map[string]store.User
	reads int
}

func (u *usersOnly) User(_ context.Context, name string) (store.User, error) {
	u.reads++
	if us, ok := u.users[name]; ok {
		return us, nil
	}
	return store.User{}, store.ErrNotFound
}

// On a cluster's node the device list is read again after maxAge, so a
// device registered on another node gets group messages from this one;
// on a lone server it is kept until forgotten.
func TestDeviceCacheAge(t *testing.T) {
	st := &usersOnly{users: map[string]store.User{"bob": {Name: "bob", Devices: []store.Device{
		{DeviceAddr: store.DeviceAddr{User: "bob", Device: 1}, RegistrationID: 7},
	}}}}
	now := time.Unix(1000, 0)
	for _, tc := range []struct {
		name   string
		maxAge time.Duration
		reads  int // after the device added elsewhere and 6 s
		devs   int
	}{{"lone server", 0, 1, 1}, {"cluster node", clusterDeviceCacheAge, 2, 2}} {
		t.Run(tc.name, func(t *testing.T) {
			st.reads = 0
			bob := st.users["bob"]
			bob.Devices = bob.Devices[:1]
			st.users["bob"] = bob
			d := deviceCache{maxAge: tc.maxAge, now: func() time.Time { return now }}
			if devs, err := d.get(context.Background(), st, "bob"); err != nil || len(devs) != 1 {
				t.Fatalf("first read: %v %v", devs, err)
			}
			// Another node registers bob's second device.
			bob.Devices = append(bob.Devices, store.Device{DeviceAddr: store.DeviceAddr{User: "bob", Device: 2}, RegistrationID: 9})
			st.users["bob"] = bob
			if devs, _ := d.get(context.Background(), st, "bob"); len(devs) != 1 || st.reads != 1 {
				t.Fatalf("within maxAge: %v after %d reads, want the cached one device", devs, st.reads)
			}
			now = now.Add(6 * time.Second)
			devs, _ := d.get(context.Background(), st, "bob")
			if len(devs) != tc.devs || st.reads != tc.reads {
				t.Fatalf("6 s later: %d devices after %d reads, want %d after %d", len(devs), st.reads, tc.devs, tc.reads)
			}
		})
	}
}
