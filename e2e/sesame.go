package e2e

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/magpie-im/magpie/wire"
)

// DevicePayload is one device's ciphertext in a per-device send.
type DevicePayload struct {
	Device, RegistrationID uint32
	Payload                []byte
}

// DeviceMismatch is the server's answer when a per-device send does not
// name exactly the recipient's devices with keys: Missing devices have keys
// and got no payload, Extra ones got a payload and have no keys (they were
// removed), and Stale ones were named with an old registration id (they
// were registered again).
type DeviceMismatch struct {
	Missing, Extra, Stale []uint32
}

func (m *DeviceMismatch) Error() string {
	return fmt.Sprintf("e2e: the recipient's devices changed (missing %v, extra %v, stale %v)", m.Missing, m.Extra, m.Stale)
}

// Delivery is the server's acknowledgement of a send.
type Delivery struct {
	ServerTime time.Time // when the server first accepted the message
	Devices    int       // devices it was queued for (or, ephemeral, handed to)
	Duplicate  bool      // the server had this message id already
}

// Courier is the server, as an end-to-end send needs it.
type Courier interface {
	// Bundles fetches prekey bundles for devices of user (nil: all its
	// devices with keys).
	Bundles(ctx context.Context, user string, devices []uint32) (*wire.GetBundlesResponse, error)
	// Deliver sends each payload to its device of user to, under message
	// id. If the devices named are not exactly to's devices with keys (for
	// one's own account: its other devices), the returned error must match
	// *DeviceMismatch with errors.As.
	Deliver(ctx context.Context, to string, id [16]byte, ephemeral bool, payloads []DevicePayload) (Delivery, error)
}

// Transactor runs fn over the e2e state in one transaction: all of fn's
// writes commit together, or none if fn fails (or the commit does).
type Transactor interface {
	Update(ctx context.Context, fn func(KV) error) error
}

// Sesame sends messages end to end as Signal's Sesame algorithm does: one
// ciphertext per device of the recipient, each from its own Double Ratchet
// session, sessions started from prekey bundles as needed, and the device
// list reconciled when the server says it is out of date. A Sesame is safe
// for concurrent use and must not be copied after its first Send. Only
// Sends through the same Sesame share a start of sessions, so keep one per
// device rather than making one per send.
type Sesame struct {
	User   string    // this account (a send to it goes to this account's other devices, and may have none)
	Self   *Identity // this device's identity
	DB     Transactor
	Server Courier
	Random io.Reader // crypto/rand.Reader if nil
	// OnIdentityChange, if set, is called when starting sessions finds
	// that an unverified contact's identity key changed (the new key is
	// trusted from then on; the caller tells the user).
	OnIdentityChange func(user string)

	mu sync.Mutex
	// starting holds, for each user whose sessions a Send is starting
	// because there were none, a channel closed when it is done, so that
	// concurrent sends to that user fetch each device's bundle once, not
	// once per send (fetches are rate-limited and spend one-time prekeys).
	starting map[string]chan struct{}
}

// maxRounds bounds how many times one Send starts sessions or reconciles
// the device list before giving up.
const maxRounds = 3

// errNoSessions: no session with any device of the recipient yet.
var errNoSessions = errors.New("e2e: no session with any device of the recipient")

// Send encrypts plaintext for every device of user to and delivers it,
// starting sessions and reconciling the device list as needed (at most 3
// rounds). A verified contact whose identity key changed gets nothing: the
// error matches ErrIdentityChanged. Each encryption and the session steps
// it makes are saved in one transaction before anything is delivered; the
// network is never used inside a transaction.
func (s *Sesame) Send(ctx context.Context, to string, id [16]byte, plaintext []byte, ephemeral bool) (Delivery, error) {
	for round := 0; ; round++ {
		payloads, err := s.encrypt(ctx, to, plaintext)
		if errors.Is(err, errNoSessions) && round < maxRounds {
			if err := s.startFirst(ctx, to); err != nil {
				return Delivery{}, err
			}
			continue
		}
		if err != nil {
			return Delivery{}, err
		}
		d, err := s.Server.Deliver(ctx, to, id, ephemeral, payloads)
		if err == nil || round >= maxRounds {
			return d, err
		}
		var m *DeviceMismatch
		if !errors.As(err, &m) {
			return d, err
		}
		if err := s.reconcile(ctx, to, m); err != nil {
			return Delivery{}, err
		}
	}
}

func (s *Sesame) random() io.Reader {
	if s.Random == nil {
		return rand.Reader
	}
	return s.Random
}

// identityChanged is the error for a verified contact whose key changed.
func identityChanged(user string) error {
	return fmt.Errorf("%s's safety number changed since it was verified: %w", user, ErrIdentityChanged)
}

// encrypt encrypts plaintext for every device of to that this device has a
// session with, in device order, in one transaction.
func (s *Sesame) encrypt(ctx context.Context, to string, plaintext []byte) ([]DevicePayload, error) {
	var payloads []DevicePayload
	err := s.DB.Update(ctx, func(kv KV) error {
		// A verified contact whose key changed (seen in a message, a
		// bundle or a lookup) gets nothing until the user verifies again,
		// even over sessions that still work.
		if c, err := LoadContact(kv, to); err != nil {
			return err
		} else if c != nil && c.Pending != nil {
			return identityChanged(to)
		}
		devs, err := SessionDevices(kv, to)
		if err != nil {
			return err
		}
		if len(devs) == 0 && to != s.User {
			return errNoSessions
		}
		ids := make([]uint32, 0, len(devs))
		for d := range devs {
			ids = append(ids, d)
		}
		slices.Sort(ids)
		payloads = make([]DevicePayload, 0, len(ids))
		for _, d := range ids {
			p, err := Encrypt(kv, s.Self, to, d, plaintext, s.random())
			if err != nil {
				return err
			}
			payloads = append(payloads, DevicePayload{Device: d, RegistrationID: devs[d], Payload: p})
		}
		return nil
	})
	return payloads, err
}

// startFirst starts sessions with every device of user, which had none.
// If another Send is already doing so it waits for that one instead, and
// the caller tries again with what it started.
func (s *Sesame) startFirst(ctx context.Context, user string) error {
	s.mu.Lock()
	if done, busy := s.starting[user]; busy {
		s.mu.Unlock()
		select {
		case <-done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.starting == nil {
		s.starting = make(map[string]chan struct{})
	}
	done := make(chan struct{})
	s.starting[user] = done
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.starting, user)
		s.mu.Unlock()
		close(done)
	}()
	// A Send that started them between this one's encryption and now has
	// left sessions behind: use those.
	var have bool
	if err := s.DB.Update(ctx, func(kv KV) error {
		devs, err := SessionDevices(kv, user)
		have = len(devs) > 0
		return err
	}); err != nil || have {
		return err
	}
	return s.startSessions(ctx, user, nil)
}

// reconcile brings the sessions with to's devices in line with the
// server's answer m: sessions with removed (extra) and re-registered
// (stale) devices are dropped, and new sessions start with new (missing)
// and re-registered ones.
func (s *Sesame) reconcile(ctx context.Context, to string, m *DeviceMismatch) error {
	if err := s.DB.Update(ctx, func(kv KV) error {
		for _, d := range slices.Concat(m.Extra, m.Stale) {
			if err := DeleteSession(kv, to, d); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if fetch := slices.Concat(m.Missing, m.Stale); len(fetch) > 0 {
		return s.startSessions(ctx, to, fetch)
	}
	return nil
}

// startSessions fetches bundles for devices of user (nil: all) and starts
// sessions with them, checking the identity key against what this device
// trusts.
func (s *Sesame) startSessions(ctx context.Context, user string, devices []uint32) error {
	resp, err := s.Server.Bundles(ctx, user, devices)
	if err != nil {
		return err
	}
	var changed, refused bool
	err = s.DB.Update(ctx, func(kv KV) error {
		var err error
		changed, err = StartSessions(kv, s.Self, resp, s.random())
		if errors.Is(err, ErrIdentityChanged) {
			// A verified contact's new key, recorded as pending: commit
			// that, and refuse below.
			refused = true
			return nil
		}
		return err
	})
	switch {
	case err != nil:
		return err
	case refused:
		return identityChanged(user)
	case changed && s.OnIdentityChange != nil:
		s.OnIdentityChange(user)
	}
	return nil
}
