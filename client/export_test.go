package client

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"

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
// endpoints worked, as a fresh install would.
func ForgetEndpointsForTest(ctx context.Context, c *Client) error {
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
