package client

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
)

// Earlier development builds kept a client's state in tables of their own
// (settings, messages). NewSQLiteStore moves their rows, still sealed under
// their old labels, into the legacy namespaces; convertLegacy turns them
// into this version's records once the state is unlocked, in one
// transaction. The end-to-end state (sessions, keys) was already a
// key-value table sealed the way it still is, and stays as it is.

// legacyMessage is a row of the old messages table.
type legacyMessage struct {
	Outgoing   int    `json:"outgoing"`
	Peer       string `json:"peer"`
	PeerDevice uint32 `json:"peer_device"`
	ClientID   string `json:"client_id"` // hex
	Body       string `json:"body"`      // hex of the sealed text
	Content    string `json:"content"`   // hex of the sealed content, or ""
	Created    int64  `json:"created"`
	ServerTime int64  `json:"server_time"`
	Delivered  int64  `json:"delivered"`
}

func convertLegacy(ctx context.Context, st Store, sl Sealer) error {
	var pending bool
	err := st.View(ctx, func(r ReadTx) error {
		return r.Scan(nsLegacySettings, "", "", false, func(string, []byte) (bool, error) {
			pending = true
			return false, nil
		})
	})
	if err != nil || !pending {
		return err
	}
	return st.Update(ctx, func(w Tx) error {
		t := sealedTx{r: w, w: w, s: sl}
		settings := map[string][]byte{}
		err := w.Scan(nsLegacySettings, "", "", false, func(k string, v []byte) (bool, error) {
			settings[k] = append([]byte(nil), v...)
			return true, nil
		})
		if err != nil {
			return err
		}
		if h := settings["vault_header"]; h != nil {
			if err := w.Put(nsMeta, "vault", h); err != nil {
				return err
			}
		}
		if k := settings["device_private_key"]; k != nil {
			pk, err := sl.Open([]byte("settings/device_private_key"), k)
			if err != nil {
				return fmt.Errorf("%w: the device key of an earlier version: %w", ErrCorrupt, err)
			}
			if err := t.Put(nsSettings, "device_key", pk); err != nil {
				return err
			}
		}
		for old, now := range map[string]string{"invite": "invite", "endpoints": settingEndpoints, "endpoint_good": settingLastGood, "relays": settingRelays} {
			if v := settings[old]; v != nil {
				if err := t.Put(nsSettings, now, v); err != nil {
					return err
				}
			}
		}
		if u := settings["username"]; len(u) > 0 {
			dev, _ := strconv.ParseUint(string(settings["device_id"]), 10, 32)
			if err := putJSON(t, nsSettings, "account", DeviceAddr{User: string(u), Device: uint32(dev)}); err != nil {
				return err
			}
		}
		if err := convertLegacyMessages(t, sl); err != nil {
			return err
		}
		for _, ns := range []string{nsLegacySettings, nsLegacyMessages, "client.uploads"} {
			if err := deleteAll(w, ns); err != nil {
				return err
			}
		}
		return nil
	})
}

func convertLegacyMessages(t sealedTx, sl Sealer) error {
	var rows []legacyMessage
	err := t.w.Scan(nsLegacyMessages, "", "", false, func(_ string, v []byte) (bool, error) {
		var m legacyMessage
		if err := json.Unmarshal(v, &m); err != nil {
			return false, fmt.Errorf("%w: a message of an earlier version: %w", ErrCorrupt, err)
		}
		rows = append(rows, m)
		return true, nil
	})
	if err != nil {
		return err
	}
	peers := map[string]bool{}
	for _, m := range rows {
		id, _ := hex.DecodeString(m.ClientID)
		label := fmt.Sprintf("msg/%t/%s/%d/%x", m.Outgoing == 1, m.Peer, m.PeerDevice, id)
		r := &msgRecord{ID: id, Peer: m.Peer, Outgoing: m.Outgoing == 1, Device: m.PeerDevice,
			Composed: m.Created, Stored: m.Created, Server: m.ServerTime, Delivered: m.Delivered}
		if sealed, _ := hex.DecodeString(m.Content); len(sealed) > 0 {
			if r.Content, err = sl.Open([]byte("content/"+label), sealed); err != nil {
				return fmt.Errorf("%w: a message of an earlier version: %w", ErrCorrupt, err)
			}
			r.Text = r.attachment().GetCaption()
			r.Transfer = &xferState{State: TransferUploaded}
			if !r.Outgoing {
				r.Transfer = &xferState{State: TransferFailed, Err: "received by an earlier version of Magpie, which saved it in its downloads folder"}
			}
		} else {
			sealed, _ := hex.DecodeString(m.Body)
			body, err := sl.Open([]byte(label), sealed)
			if err != nil {
				return fmt.Errorf("%w: a message of an earlier version: %w", ErrCorrupt, err)
			}
			r.Text = string(body)
		}
		switch {
		case !r.Outgoing:
			r.State = StateReceived
		case m.Delivered != 0:
			r.State = StateDelivered
		case m.ServerTime != 0:
			r.State = StateSent
		default:
			r.State = StateQueued
		}
		if err := addMessage(t, r); err != nil {
			return err
		}
		peers[r.Peer] = true
		if r.State == StateQueued {
			if err := queue(t, &outboxItem{Msg: r.Seq, Peer: r.Peer, ID: r.ID}); err != nil {
				return err
			}
		}
	}
	// What an earlier version showed counts as read.
	for p := range peers {
		var conv convRecord
		if _, err := getJSON(t, nsConv, p, &conv); err != nil {
			return err
		}
		conv.ReadSeq, conv.Unread = conv.Last, 0
		if err := putJSON(t, nsConv, p, conv); err != nil {
			return err
		}
	}
	return nil
}

func deleteAll(w Tx, ns string) error {
	var keys []string
	err := w.Scan(ns, "", "", false, func(k string, _ []byte) (bool, error) {
		keys = append(keys, k)
		return true, nil
	})
	for _, k := range keys {
		if err == nil {
			err = w.Delete(ns, k)
		}
	}
	return err
}
