package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/e2e/xeddsa"
	"github.com/magpie-im/magpie/router"
	"github.com/magpie-im/magpie/store"
	"github.com/magpie-im/magpie/username"
	"github.com/magpie-im/magpie/wire"
)

// Prekey policy.
const (
	// maxStoredPreKeys bounds each kind of one-time prekey a device may keep
	// on the server.
	maxStoredPreKeys = 200
	// lowPreKeys: below this many one-time prekeys of either kind, the
	// device is told to upload more.
	lowPreKeys = 10
)

// setKeys stores this device's end-to-end public keys. Signatures are
// checked against the identity key in the same request: the server cannot
// judge whether an identity is genuine (safety numbers are for that), but it
// refuses keys that their own identity did not sign, so a broken client
// cannot strand its contacts with unusable bundles.
func (c *conn) setKeys(id uint64, req *wire.SetKeysRequest) {
	k := store.Keys{IdentityKey: req.GetIdentityKey(), RegistrationID: req.GetRegistrationId()}
	var identity curve.PublicKey
	if len(k.IdentityKey) > 0 {
		var err error
		if identity, err = curve.ParsePublicKey(k.IdentityKey); err != nil {
			c.respondErr(id, wire.ErrorCode_ERROR_CODE_BAD_REQUEST, "identity key is not a Curve25519 key (type 0x05)", 0)
			return
		}
	}
	needsIdentity := req.GetSignedPreKey() != nil || req.GetLastResortKyberPreKey() != nil || len(req.GetKyberPreKeys()) > 0
	if needsIdentity && len(k.IdentityKey) == 0 {
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_BAD_REQUEST, "signed prekeys must come with the identity key that signed them", 0)
		return
	}
	verify := func(what string, p *wire.SignedPreKey) (*store.SignedPreKey, bool) {
		if p == nil {
			return nil, true
		}
		if !xeddsa.Verify(identity, p.GetPublicKey(), [64]byte(p.GetSignature())) {
			c.respondErr(id, wire.ErrorCode_ERROR_CODE_BAD_REQUEST, fmt.Sprintf("%s %d: signature does not verify under the identity key", what, p.GetId()), 0)
			return nil, false
		}
		return &store.SignedPreKey{ID: p.GetId(), Key: p.GetPublicKey(), Signature: p.GetSignature()}, true
	}
	var ok bool
	if k.SignedPreKey, ok = verify("signed prekey", req.GetSignedPreKey()); !ok {
		return
	}
	if k.LastResortKyber, ok = verify("last-resort Kyber prekey", req.GetLastResortKyberPreKey()); !ok {
		return
	}
	for _, p := range req.GetKyberPreKeys() {
		spk, ok := verify("Kyber prekey", p)
		if !ok {
			return
		}
		k.KyberPreKeys = append(k.KyberPreKeys, *spk)
	}
	for _, p := range req.GetPreKeys() {
		if _, err := curve.ParsePublicKey(p.GetPublicKey()); err != nil {
			c.respondErr(id, wire.ErrorCode_ERROR_CODE_BAD_REQUEST, fmt.Sprintf("prekey %d is not a Curve25519 key", p.GetId()), 0)
			return
		}
		k.PreKeys = append(k.PreKeys, store.PreKey{ID: p.GetId(), Key: p.GetPublicKey()})
	}
	counts, err := c.s.cfg.Store.SetKeys(context.Background(), c.dev, k, maxStoredPreKeys)
	c.s.devices.forget(c.dev.User) // a device with keys now gets group messages
	switch {
	case errors.Is(err, store.ErrIdentityConflict):
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_BAD_REQUEST, "this identity key differs from the account's, which other devices use; a new device must be linked from an existing one", 0)
		return
	case errors.Is(err, store.ErrKeyLimit):
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_TOO_LARGE, fmt.Sprintf("at most %d one-time prekeys of each kind may be stored", maxStoredPreKeys), 0)
		return
	case err != nil:
		c.s.log.Error("storing keys", "err", err)
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_INTERNAL, "server error; try again", 1000)
		return
	}
	c.respond(&wire.Response{Id: id, Body: &wire.Response_SetKeys{SetKeys: &wire.SetKeysResponse{KeyCounts: wireCounts(counts)}}})
}

func wireCounts(k store.KeyCounts) *wire.KeyCounts {
	return &wire.KeyCounts{PreKeys: uint32(k.PreKeys), KyberPreKeys: uint32(k.KyberPreKeys)}
}

func (c *conn) getBundles(id uint64, req *wire.GetBundlesRequest) {
	name, err := username.Normalize(req.GetUsername())
	if err != nil {
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_USERNAME_INVALID, err.Error(), 0)
		return
	}
	oneTime, ok := c.bundleBudget(name)
	if !ok {
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_RATE_LIMITED, "too many key bundle requests; slow down", 2000)
		return
	}
	identity, bundles, err := c.s.cfg.Store.Bundles(context.Background(), name, req.GetDevices(), oneTime)
	switch {
	case errors.Is(err, store.ErrNoKeys):
		c.respondErr(id, wire.ErrorCode_ERROR_CODE_NO_KEYS, fmt.Sprintf("%q has not set up end-to-end encryption yet (an old client?)", name), 0)
		return
	case err != nil:
		c.storeErr(id, name, err)
		return
	}
	resp := &wire.GetBundlesResponse{Username: name, IdentityKey: identity}
	for _, b := range bundles {
		db := &wire.DeviceBundle{
			Device:         b.Device,
			RegistrationId: b.RegistrationID,
			SignedPreKey:   &wire.SignedPreKey{Id: b.SignedPreKey.ID, PublicKey: b.SignedPreKey.Key, Signature: b.SignedPreKey.Signature},
			KyberPreKey:    &wire.SignedPreKey{Id: b.KyberPreKey.ID, PublicKey: b.KyberPreKey.Key, Signature: b.KyberPreKey.Signature},
		}
		if b.PreKey != nil {
			db.PreKey = &wire.PreKey{Id: b.PreKey.ID, PublicKey: b.PreKey.Key}
		}
		resp.Bundles = append(resp.Bundles, db)
	}
	c.respond(&wire.Response{Id: id, Body: &wire.Response_GetBundles{GetBundles: resp}})
	for _, b := range bundles {
		c.warnIfLow(store.DeviceAddr{User: name, Device: b.Device})
	}
}

// warnIfLow tells a connected device whose one-time prekeys run low to
// upload more; a device that is offline learns it from its next hello.
func (c *conn) warnIfLow(d store.DeviceAddr) {
	counts, err := c.s.cfg.Store.KeyCounts(context.Background(), d)
	if err != nil || (counts.PreKeys >= lowPreKeys && counts.KyberPreKeys >= lowPreKeys) {
		return
	}
	c.s.router.PushTo(d, router.Push{KeysLow: &counts})
}

// perDeviceSend converts a per-device (end-to-end) send for the store.
func perDeviceSend(req *wire.SendRequest) []store.DevicePayload {
	out := make([]store.DevicePayload, 0, len(req.GetDevicePayloads()))
	for _, d := range req.GetDevicePayloads() {
		out = append(out, store.DevicePayload{Device: d.GetDevice(), RegistrationID: d.GetRegistrationId(), Payload: d.GetPayload()})
	}
	return out
}

func mismatchErr(mm *store.MismatchError) *wire.Error {
	return &wire.Error{
		Code:     wire.ErrorCode_ERROR_CODE_MISMATCHED_DEVICES,
		Message:  "the recipient's devices changed; update the device list and retry",
		Mismatch: &wire.MismatchedDevices{Missing: mm.Missing, Extra: mm.Extra, Stale: mm.Stale},
	}
}

// bundleBudget spends a fetch of target's keys from this account's
// budget (ok false: over it), and says whether the fetch may spend
// target's one-time prekeys: only while this account has not had them
// too often, and target's have not gone to everyone too fast. So nobody
// can empty a user's one-time prekeys, by reconnecting or with many
// accounts; past the budgets, bundles carry the last-resort keys.
func (c *conn) bundleBudget(target string) (oneTime, ok bool) {
	now := c.s.cfg.Now()
	if !c.s.bundles.allow(c.dev.User, now, 1) {
		return false, false
	}
	oneTime = c.s.bundlePairs.allow(c.dev.User+"\x00"+target, now, 1) && c.s.bundleTargets.allow(target, now, 1)
	return oneTime, true
}
