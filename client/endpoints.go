package client

import (
	"context"
	"encoding/json"
	"maps"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/internal/clientconn"
	"github.com/magpie-im/magpie/wire"
)

// Settings for what the client learned about reaching its server.
const (
	settingEndpoints = "endpoints"     // newest verified wire.SignedEndpointList
	settingLastGood  = "endpoint_good" // JSON: endpoint key → last successful connection
	settingBlocked   = "endpoint_bad"  // JSON: endpoint key → last time it was found blocked
	settingRelays    = "relays"        // JSON: relay links added by the user
)

// setting reads a sealed setting (nil if unset).
func (c *Client) setting(ctx context.Context, name string) ([]byte, error) {
	var v []byte
	err := c.view(ctx, func(t sealedTx) error {
		var err error
		v, err = t.Get(nsSettings, name)
		return err
	})
	return v, err
}

// setSetting writes a sealed setting.
func (c *Client) setSetting(ctx context.Context, name string, v []byte) error {
	return c.update(ctx, func(t sealedTx) error { return t.Put(nsSettings, name, v) })
}

// AddRelay adds an endpoint given out of band as a link (a relay a friend
// runs, or a fresh endpoint for a user whose every endpoint is blocked).
// Links are not signed, and need not be: the Noise handshake authenticates
// the server by the invite's key, so a bad link leads nowhere, never to an
// impostor.
func (c *Client) AddRelay(ctx context.Context, link string) (endpoints.Endpoint, error) {
	e, err := endpoints.ParseLink(link)
	if err != nil {
		return e, err
	}
	links, err := c.relayLinks(ctx)
	if err != nil {
		return e, err
	}
	for _, l := range links {
		if old, err := endpoints.ParseLink(l); err == nil && old.Key() == e.Key() {
			return e, nil
		}
	}
	b, err := json.Marshal(append(links, link))
	if err != nil {
		return e, err
	}
	return e, c.setSetting(ctx, settingRelays, b)
}

func (c *Client) relayLinks(ctx context.Context) ([]string, error) {
	raw, err := c.setting(ctx, settingRelays)
	if err != nil || raw == nil {
		return nil, err
	}
	var links []string
	return links, json.Unmarshal(raw, &links)
}

// knownEndpoints is everything this client may try, in dial order
// (endpoints.Order): the newest verified endpoint list, the invite's
// addresses and the relays the user added; stealthy ones first, plain tcp
// only if nothing else is offered, the operator marked it safe or the user
// allows it; what worked last first, what was found blocked since last.
func (c *Client) knownEndpoints(ctx context.Context) ([]endpoints.Endpoint, uint64, error) {
	now := c.opts.Now()
	var best *endpoints.List
	consider := func(raw []byte) {
		var sl wire.SignedEndpointList
		if raw == nil || proto.Unmarshal(raw, &sl) != nil {
			return
		}
		if l, err := endpoints.Verify(&sl, c.inv.ServerKey, now); err == nil && (best == nil || l.Version > best.Version) {
			best = &l
		}
	}
	// The newest verified list wins, whether it came in band or in a
	// (newer) invite given out of band.
	raw, err := c.setting(ctx, settingEndpoints)
	if err != nil {
		return nil, 0, err
	}
	consider(raw)
	consider(c.inv.Endpoints)
	var eps []endpoints.Endpoint
	var version uint64
	if best != nil {
		eps, version = best.Endpoints, best.Version
	}
	eps = clientconn.MergeEndpoints(eps, c.inv.Addrs)
	links, err := c.relayLinks(ctx)
	if err != nil {
		return nil, 0, err
	}
	for _, l := range links {
		if e, err := endpoints.ParseLink(l); err == nil {
			// The user added it: even plain tcp is what they asked for.
			e.Safe = true
			eps = append(eps, e)
		}
	}
	// Spread by the device key: the nodes of a cluster share out devices,
	// and each device tries them in the same order every time.
	mem := endpoints.Memory{Good: c.lastGood(ctx), Blocked: c.times(ctx, settingBlocked), Spread: c.key.Public[:]}
	return endpoints.Order(eps, mem, c.PlainTCP()), version, nil
}

func (c *Client) lastGood(ctx context.Context) map[string]time.Time {
	return c.times(ctx, settingLastGood)
}

// times reads a setting that maps endpoint keys to times.
func (c *Client) times(ctx context.Context, name string) map[string]time.Time {
	m := map[string]time.Time{}
	if raw, err := c.setting(ctx, name); err == nil && raw != nil {
		json.Unmarshal(raw, &m)
	}
	return m
}

// stamp records times against endpoint keys in a setting of times.
func (c *Client) stamp(ctx context.Context, name string, at map[string]time.Time) {
	m := c.times(ctx, name)
	maps.Copy(m, at)
	if b, err := json.Marshal(m); err == nil {
		c.setSetting(ctx, name, b)
	}
}

// remember records that e worked, so it is tried first next time.
func (c *Client) remember(ctx context.Context, e endpoints.Endpoint) {
	c.stamp(ctx, settingLastGood, map[string]time.Time{e.Key(): c.opts.Now()})
}

// rememberBlocked records that e was found blocked (a connection through it
// went silent, too slow, or was reset), so it is tried after the others
// until it works again.
func (c *Client) rememberBlocked(ctx context.Context, e endpoints.Endpoint) {
	c.opts.Logger.Info("endpoint found blocked; trying the others first", "endpoint", e.Key())
	c.stamp(ctx, settingBlocked, map[string]time.Time{e.Key(): c.opts.Now()})
}

// PlainTCP reports whether the user allows plain tcp endpoints that the
// operator did not mark safe. Off (the default), a client whose endpoint
// list offers obfs, tls or a relay never dials plain tcp, whose first
// packet a censor can fingerprint.
func (c *Client) PlainTCP() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.prefs.PlainTCP
}

// SetPlainTCP allows or forbids plain tcp endpoints the operator did not
// mark safe (for a network known not to censor, or to reach a server
// whose other listeners are down).
func (c *Client) SetPlainTCP(ctx context.Context, on bool) error {
	return c.setPrefs(ctx, func(p *prefs) { p.PlainTCP = on })
}

// refreshEndpoints asks the server for a newer endpoint list and keeps it if
// it verifies under the server key from the invite and is newer than what
// the client has.
func (c *Client) refreshEndpoints(ctx context.Context, conn *clientconn.Conn, have uint64) error {
	sl, err := conn.Endpoints(ctx, have)
	if err != nil || sl == nil {
		return err
	}
	l, err := endpoints.Verify(sl, c.inv.ServerKey, c.opts.Now())
	if err != nil || l.Version <= have {
		c.opts.Logger.Warn("ignoring an endpoint list that does not verify or is not newer", "err", err)
		return nil
	}
	raw, err := proto.Marshal(sl)
	if err != nil {
		return err
	}
	return c.setSetting(ctx, settingEndpoints, raw)
}

// Endpoints returns the endpoints this client knows, in the order it would
// try them.
func (c *Client) Endpoints(ctx context.Context) ([]endpoints.Endpoint, error) {
	eps, _, err := c.knownEndpoints(ctx)
	return eps, err
}
