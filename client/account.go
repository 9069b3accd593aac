package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"

	"github.com/magpie-im/magpie/content"
	"github.com/magpie-im/magpie/e2e"
	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/fingerprint"
	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/username"
	"github.com/magpie-im/magpie/wire"
)

// Sentinel errors for the server's answers that callers branch on.
var (
	ErrUnknownUser       = clientconn.ErrUnknownUser
	ErrUsernameInvalid   = clientconn.ErrUsernameInvalid
	ErrUsernameTaken     = clientconn.ErrUsernameTaken
	ErrAlreadyRegistered = clientconn.ErrAlreadyRegistered
	ErrNoKeys            = clientconn.ErrNoKeys
	ErrRateLimited       = clientconn.ErrRateLimited
	ErrTooLarge          = clientconn.ErrTooLarge
	ErrQuota             = clientconn.ErrQuota
	ErrQueueFull         = clientconn.ErrQueueFull
	// ErrPoWRequired: the server's sign-up puzzle was not solved in time
	// (Register solves it by itself; EventSignupPuzzle says it started).
	ErrPoWRequired = clientconn.ErrPoWRequired
)

// Register creates account name with this device as its first device, and
// uploads its end-to-end keys. Run must not be running (it needs an
// account to start).
func (c *Client) Register(ctx context.Context, name string) (DeviceAddr, error) {
	if d, ok := c.Account(); ok {
		return d, fmt.Errorf("this device is already registered as %q: %w", d.User, ErrAlreadyRegistered)
	}
	if _, err := username.Normalize(name); err != nil {
		return DeviceAddr{}, fmt.Errorf("%w: %w", ErrUsernameInvalid, err)
	}
	var d DeviceAddr
	err := c.withConn(ctx, func(conn *clientconn.Conn) error {
		if cd, ok := conn.Device(); ok {
			d = DeviceAddr(cd)
			return fmt.Errorf("this device is already registered as %q: %w", d.User, ErrAlreadyRegistered)
		}
		cd, err := conn.RegisterWith(ctx, name, clientconn.RegisterOptions{
			SignupCode: c.inv.SignupCode,
			OnPuzzle:   func(bits int) { c.publish(Event{Kind: EventSignupPuzzle, PuzzleBits: bits}) },
		})
		if err != nil {
			return err
		}
		d = DeviceAddr(cd)
		if err := c.saveAccount(ctx, d); err != nil {
			return err
		}
		// An account is only reachable end to end once its keys are up.
		return c.ensureKeys(ctx, conn, conn.KeyCounts())
	})
	return d, err
}

// identity returns this device's end-to-end identity.
func (c *Client) identity(ctx context.Context) (*e2e.Identity, error) {
	var id *e2e.Identity
	err := c.view(ctx, func(t sealedTx) error {
		var err error
		id, err = e2e.LoadIdentity(t)
		return err
	})
	return id, err
}

// ensureKeys creates this device's identity the first time and uploads
// whatever the server lacks: all keys at first, rotated signed prekeys, and
// one-time prekeys when counts run low.
func (c *Client) ensureKeys(ctx context.Context, conn *clientconn.Conn, counts clientconn.KeyCounts) error {
	var upload *wire.SetKeysRequest
	err := c.update(ctx, func(t sealedTx) error {
		self, err := e2e.CreateIdentity(t, rand.Reader)
		if err != nil {
			return err
		}
		upload, err = e2e.KeysToUpload(t, self, counts.PreKeys, counts.KyberPreKeys, c.opts.Now(), rand.Reader)
		return err
	})
	if err != nil || upload == nil {
		return err
	}
	if _, err := conn.SetKeys(ctx, upload); err != nil {
		return fmt.Errorf("uploading end-to-end keys: %w", err)
	}
	return nil
}

// otherOwnDevices reports whether this account has other devices with keys,
// which get a transcript of each sent message (Sesame).
func (c *Client) otherOwnDevices(ctx context.Context, conn *clientconn.Conn) (bool, error) {
	me, _ := c.Account()
	u, err := conn.Lookup(ctx, me.User)
	if err != nil {
		return false, err
	}
	for _, d := range u.Devices {
		if d.Device != me.Device && d.RegistrationID != 0 {
			return true, nil
		}
	}
	return false, nil
}

// e2eDB runs the end-to-end layer's transactions in the client's store.
type e2eDB struct{ c *Client }

func (d e2eDB) Update(ctx context.Context, fn func(e2e.KV) error) error {
	return d.c.update(ctx, func(t sealedTx) error { return fn(t) })
}

// sesame is the end-to-end send path over conn: the engine's own (one per
// connection, so that sends to a new contact start its sessions once), or
// a new one for a connection of a single call.
func (c *Client) sesame(ctx context.Context, conn *clientconn.Conn) (*e2e.Sesame, error) {
	c.mu.Lock()
	if c.eng.live == conn && c.eng.sesame != nil {
		s := c.eng.sesame
		c.mu.Unlock()
		return s, nil
	}
	c.mu.Unlock()
	self, err := c.identity(ctx)
	if err != nil {
		return nil, err
	}
	me, _ := c.Account()
	return &e2e.Sesame{
		User: me.User, Self: self, DB: e2eDB{c}, Server: conn.Courier(), Random: rand.Reader,
		OnIdentityChange: func(user string) { c.publish(Event{Kind: EventIdentityChanged, Peer: user}) },
	}, nil
}

// Typing tells to's connected devices that this user started (or stopped)
// typing. It is never stored: when the engine is offline it fails with
// ErrOffline and nothing is lost.
func (c *Client) Typing(ctx context.Context, to string, typing bool) error {
	to, err := c.checkRecipient(ctx, to)
	if err != nil {
		return err
	}
	c.mu.Lock()
	offline := c.eng.running && c.eng.live == nil && c.eng.status.State != ConnConnecting
	c.mu.Unlock()
	if offline {
		// Not worth waiting for a connection: it would be stale by then.
		return fmt.Errorf("%w: not connected", ErrOffline)
	}
	return c.withConn(ctx, func(conn *clientconn.Conn) error {
		if id, ok := groupOf(to); ok {
			return c.groupTyping(ctx, conn, id, typing)
		}
		s, err := c.sesame(ctx, conn)
		if err != nil {
			return err
		}
		_, err = s.Send(ctx, to, NewMessageID(), content.EncodeTyping(typing), true)
		return err
	})
}

// User is what the server says of an account.
type User struct {
	Name    string
	Devices []Device
}

// Device is one device of a user.
type Device struct {
	ID      uint32
	Created time.Time
	// Key is the device's Noise static public key.
	Key [32]byte
	// HasKeys: the device has uploaded end-to-end keys (it can receive).
	HasKeys bool
}

// Lookup asks the server about a user.
func (c *Client) Lookup(ctx context.Context, name string) (*User, error) {
	name, err := username.Normalize(name)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUsernameInvalid, err)
	}
	var u *User
	err = c.withConn(ctx, func(conn *clientconn.Conn) error {
		info, err := conn.Lookup(ctx, name)
		if err != nil {
			return err
		}
		u = &User{Name: info.Name}
		for _, d := range info.Devices {
			u.Devices = append(u.Devices, Device{ID: d.Device, Created: d.Created, Key: d.Key, HasKeys: d.RegistrationID != 0})
		}
		return nil
	})
	return u, err
}

// SafetyNumber is what two users compare to rule out a man in the middle:
// 60 digits, and the payload of a QR code that the other's app can scan.
type SafetyNumber struct {
	User      string
	Digits    string
	Scannable []byte
	Verified  bool
	// Changed: the contact's key changed since it was verified. Sending is
	// refused until it is verified again.
	Changed bool
}

// SafetyNumber looks up user's identity key on the server, records it (a
// first key is trusted on first use; a change is recorded) and returns the
// safety number to compare with them. Returning it counts as showing it:
// MarkVerified without digits is allowed afterwards, for this number.
func (c *Client) SafetyNumber(ctx context.Context, user string) (*SafetyNumber, error) {
	sn, err := c.safetyNumber(ctx, user, true)
	if err != nil {
		return nil, err
	}
	return &SafetyNumber{User: sn.User, Digits: sn.Digits, Scannable: sn.Scannable,
		Verified: sn.Contact.Verified && sn.Contact.Pending == nil, Changed: sn.Contact.Pending != nil}, nil
}

type namedSafetyNumber struct {
	*e2e.SafetyNumber
	User string
}

// safetyNumber fetches user's identity key, records it, and computes the
// safety number; with shown, it records the number as shown.
func (c *Client) safetyNumber(ctx context.Context, user string, shown bool) (namedSafetyNumber, error) {
	user, err := username.Normalize(user)
	if err != nil {
		return namedSafetyNumber{}, fmt.Errorf("%w: %w", ErrUsernameInvalid, err)
	}
	var ik curve.PublicKey
	err = c.withConn(ctx, func(conn *clientconn.Conn) error {
		u, err := conn.Lookup(ctx, user)
		if err != nil {
			return err
		}
		if len(u.IdentityKey) == 0 {
			return fmt.Errorf("%s has not set up end-to-end encryption yet: %w", u.Name, ErrNoKeys)
		}
		if ik, err = curve.ParsePublicKey(u.IdentityKey); err != nil {
			return fmt.Errorf("%s's identity key: %w", u.Name, err)
		}
		return nil
	})
	if err != nil {
		return namedSafetyNumber{}, err
	}
	self, err := c.identity(ctx)
	if err != nil {
		return namedSafetyNumber{}, err
	}
	me, _ := c.Account()
	var sn *e2e.SafetyNumber
	err = c.update(ctx, func(t sealedTx) error {
		if _, err := e2e.CheckIdentity(t, user, ik); err != nil && !errors.Is(err, e2e.ErrIdentityChanged) {
			return err
		}
		if sn, err = e2e.ComputeSafetyNumber(t, me.User, self, user); err != nil || !shown {
			return err
		}
		return t.Put(nsShown, user, []byte(sn.Digits))
	})
	return namedSafetyNumber{sn, user}, err
}

// Verification is how the user confirmed a safety number.
type Verification struct {
	// Digits: the number as the other person read it out (spaces are
	// ignored). It must match.
	Digits string
	// Scanned: the payload of the other person's QR code. It must match.
	Scanned []byte
}

var (
	// ErrNotShown: MarkVerified without digits or a scan, before the
	// current safety number was shown (SafetyNumber).
	ErrNotShown = errors.New("the safety number has not been shown yet")
	// ErrMismatch: the digits or the scanned code do not match: do not
	// trust this contact's key.
	ErrMismatch = errors.New("the safety numbers do not match")
)

// MarkVerified records that the user compared safety numbers with user and
// they matched: by typing the other's digits, by scanning their code, or
// (an empty Verification) by confirming the number SafetyNumber showed.
// A changed key becomes the trusted one.
func (c *Client) MarkVerified(ctx context.Context, user string, v Verification) error {
	user, err := username.Normalize(user)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrUsernameInvalid, err)
	}
	if v.Digits != "" || v.Scanned != nil {
		// Compare against the key the server gives now.
		if _, err := c.safetyNumber(ctx, user, false); err != nil {
			return err
		}
	}
	self, err := c.identity(ctx)
	if err != nil {
		return err
	}
	me, _ := c.Account()
	return c.update(ctx, func(t sealedTx) error {
		sn, err := e2e.ComputeSafetyNumber(t, me.User, self, user)
		if errors.Is(err, e2e.ErrNoContact) {
			return ErrNotShown
		}
		if err != nil {
			return err
		}
		switch {
		case v.Digits != "":
			if digitsOnly(v.Digits) != sn.Digits {
				return ErrMismatch
			}
		case v.Scanned != nil:
			if ok, err := fingerprint.CompareScannable(sn.Scannable, v.Scanned); err != nil || !ok {
				return errors.Join(ErrMismatch, err)
			}
		default:
			shown, err := t.Get(nsShown, user)
			if err != nil {
				return err
			}
			if string(shown) != sn.Digits {
				return ErrNotShown
			}
		}
		return e2e.MarkVerified(t, user)
	})
}

func digitsOnly(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] >= '0' && s[i] <= '9' {
			b = append(b, s[i])
		}
	}
	return string(b)
}
