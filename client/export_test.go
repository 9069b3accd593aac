package client

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"

	"github.com/magpie-im/magpie/content"
	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/senderkey"
	"github.com/magpie-im/magpie/internal/clientconn"

	"github.com/magpie-im/magpie/e2e"
	"github.com/magpie-im/magpie/link"
)

// SecretsForTest returns this client's private key material: the device
// (Noise) key and every private key and Kyber seed in its end-to-end state,
// so tests can check that none of it ever reaches the server.
func SecretsForTest(ctx context.Context, c *Client) ([][]byte, error) {
	out := [][]byte{c.key.Private[:]}
	err := c.view(ctx, func(t sealedTx) error {
		for _, ns := range []string{"e2e.self", "e2e.signed", "e2e.prekey", "e2e.kyber"} {
			err := t.Scan(ns, "", "", false, func(_ string, v []byte) (bool, error) {
				var x any
				if json.Unmarshal(v, &x) == nil {
					out = append(out, privates(x)...)
				}
				return true, nil
			})
			if err != nil {
				return err
			}
		}
		return nil
	})
	return out, err
}

// privates digs the private halves out of a decoded JSON record: arrays
// of numbers under "Private" (curve keys) and base64 under "seed" (Kyber).
func privates(v any) [][]byte {
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	var out [][]byte
	for k, x := range m {
		switch x := x.(type) {
		case []any:
			if k == "Private" {
				b := make([]byte, len(x))
				for i, n := range x {
					b[i] = byte(n.(float64))
				}
				out = append(out, b)
			}
		case string:
			if b, err := base64.StdEncoding.DecodeString(x); k == "seed" && err == nil {
				out = append(out, b)
			}
		default:
			out = append(out, privates(x)...)
		}
	}
	return out
}

// DeviceKeyForTest is this device's Noise key, for a test that connects
// as the device behind the client's back.
func DeviceKeyForTest(c *Client) link.KeyPair { return c.key }

// ShareIdentityForTest gives c the identity of the account's existing
// device from, as device linking will: all devices of an account share the
// identity key.
func ShareIdentityForTest(ctx context.Context, from, c *Client) error {
	id, err := from.identity(ctx)
	if err != nil {
		return err
	}
	return c.update(ctx, func(t sealedTx) error {
		_, err := e2e.ImportIdentity(t, id.Key, rand.Reader)
		return err
	})
}

// ForgetEndpointsForTest drops what the client remembers about which
// endpoints worked and which were found blocked, as a fresh install would.
func ForgetEndpointsForTest(ctx context.Context, c *Client) error {
	if err := c.setSetting(ctx, settingBlocked, []byte("{}")); err != nil {
		return err
	}
	return c.setSetting(ctx, settingLastGood, []byte("{}"))
}

// QueueReadReceiptForTest queues a read receipt to peer naming ids, whether
// or not they are messages peer sent: what a misbehaving contact's client
// could send.
func QueueReadReceiptForTest(ctx context.Context, c *Client, peer string, ids ...MessageID) error {
	raw := make([][]byte, len(ids))
	for i := range ids {
		raw[i] = ids[i][:]
	}
	err := c.update(ctx, func(t sealedTx) error { return queueReadReceipt(t, peer, raw, c.opts.Now()) })
	c.kick(workerOutbox)
	return err
}

// GroupDecryptForTest tries to decrypt a group message (a Sender Key
// message from device from) with c's keys, as receiving it would, and
// keeps nothing: tests use it on ciphertext c was never given.
func GroupDecryptForTest(ctx context.Context, c *Client, from DeviceAddr, payload []byte) ([]byte, error) {
	var pt []byte
	errRollback := errors.New("rollback")
	err := c.update(ctx, func(t sealedTx) error {
		d, err := e2e.GroupDecrypt(t, from.User, from.Device, payload)
		if err != nil {
			return err
		}
		pt = d.Plaintext
		return errRollback
	})
	if errors.Is(err, errRollback) {
		return pt, nil
	}
	return nil, err
}

// IdentityKeyForTest returns c's identity key pair, for tests that forge
// what only c could sign.
func IdentityKeyForTest(ctx context.Context, c *Client) (curve.KeyPair, error) {
	id, err := c.identity(ctx)
	if err != nil {
		return curve.KeyPair{}, err
	}
	return id.Key, nil
}

// GroupEncryptForTest encrypts a text for group id on c's current sender
// key, as sending would, without sending it: what a member removed since,
// or a server replaying ciphertext, could put in a queue.
func GroupEncryptForTest(ctx context.Context, c *Client, id GroupID, text string) ([]byte, error) {
	var ct []byte
	err := c.update(ctx, func(t sealedTx) error {
		rec, _, err := c.loadGroup(t, id)
		if err != nil {
			return err
		}
		if rec == nil || rec.Dist == nil {
			return errors.New("no sender key for that group on this device")
		}
		b, err := content.EncodeText(text, c.opts.Now())
		if err == nil {
			b, err = content.InGroup(b, id)
		}
		if err == nil {
			ct, err = e2e.GroupEncrypt(t, senderkey.DistributionID(rec.Dist), b, rand.Reader)
		}
		return err
	})
	return ct, err
}

// SendContentForTest sends an encoded content.Content to user's devices
// over the 1:1 sessions, as the engine sends what it makes itself.
func SendContentForTest(ctx context.Context, c *Client, to string, payload []byte) error {
	return c.withConn(ctx, func(conn *clientconn.Conn) error {
		s, err := c.sesame(ctx, conn)
		if err != nil {
			return err
		}
		_, err = s.Send(ctx, to, NewMessageID(), payload, false)
		return err
	})
}

// SenderKeysForTest counts the sender key records c keeps of other
// devices' chains.
func SenderKeysForTest(ctx context.Context, c *Client) (int, error) {
	n := 0
	err := c.view(ctx, func(t sealedTx) error {
		keys, err := t.Keys("e2e.senderkey", "")
		n = len(keys)
		return err
	})
	return n, err
}
