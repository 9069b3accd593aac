package client

import (
	"context"
	"crypto/rand"
	"encoding/json"

	"github.com/magpie-im/magpie/e2e"

	"github.com/magpie-im/magpie/internal/clientstore"
)

// SecretsForTest returns this client's private key material: the device
// (Noise) key and every "Private" field in its end-to-end state, so tests
// can check that none of it ever reaches the server.
func SecretsForTest(ctx context.Context, c *Client) ([][]byte, error) {
	out := [][]byte{c.key.Private[:]}
	kv := c.st.KV(ctx)
	for _, ns := range []string{"e2e.self", "e2e.signed", "e2e.prekey"} {
		keys, err := kv.Keys(ns, "")
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			b, err := kv.Get(ns, k)
			if err != nil {
				return nil, err
			}
			var v any
			if json.Unmarshal(b, &v) == nil {
				out = append(out, privates(v)...)
			}
		}
	}
	return out, nil
}

func privates(v any) [][]byte {
	var out [][]byte
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if arr, ok := x.([]any); ok && (k == "Private" || k == "private") {
				b := make([]byte, len(arr))
				for i, n := range arr {
					b[i] = byte(n.(float64))
				}
				out = append(out, b)
				continue
			}
			out = append(out, privates(x)...)
		}
	}
	return out
}

// KeyCountsForTest reports what the server holds for this device.
func KeyCountsForTest(ctx context.Context, c *Client) (KeyCounts, error) {
	conn, err := c.Dial(ctx)
	if err != nil {
		return KeyCounts{}, err
	}
	defer conn.Close()
	return conn.KeyCounts(), nil
}

// ShareIdentityForTest gives c the identity of the account's existing
// device from, as device linking will: all devices of an account share the
// identity key.
func ShareIdentityForTest(ctx context.Context, from, c *Client) error {
	id, err := e2e.LoadIdentity(from.st.KV(ctx))
	if err != nil {
		return err
	}
	return c.st.Update(ctx, func(tx *clientstore.Tx) error {
		_, err := e2e.ImportIdentity(tx.KV(ctx), id.Key, rand.Reader)
		return err
	})
}

// ForgetEndpointsForTest drops what the client remembers about which
// endpoints worked, as a fresh install would.
func ForgetEndpointsForTest(ctx context.Context, c *Client) error {
	return c.st.Set(ctx, settingLastGood, []byte("{}"))
}
