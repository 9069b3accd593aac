package client

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Disappearing messages. A group whose settings say messages disappear
// after a time has each of its messages (sent or received here, not its
// notices) deleted from this device that long after this device stored
// it: the text, the record, and any attachment file it saved or staged.
// The deadline is fixed when the message is stored, from the setting in
// force then. The engine's expiry loop deletes what is due while the
// engine runs; a device that was off deletes it when it next runs. A
// message still waiting to be sent is kept until it has left.

// nsExpire indexes messages by when they disappear: "<Unix ms, 16 hex
// digits>/<seq key>" → {}. Hex of fixed width sorts as time does.
const nsExpire = "expire"

func expireKey(at int64, seq uint64) string {
	return fmt.Sprintf("%016x/%s", at, seqKey(seq))
}

// setExpiry gives a new message in a group's conversation its deadline,
// when the group's messages disappear, and indexes it; the caller stores
// r. r.Seq must be set.
func setExpiry(t sealedTx, r *msgRecord) error {
	id, ok := groupOf(r.Peer)
	if !ok || r.Notice {
		return nil
	}
	var rec groupRecord
	if ok, err := getJSON(t, nsGroup, id.String(), &rec); err != nil || !ok || rec.DisappearMs <= 0 {
		return err
	}
	r.Expire = r.Stored + rec.DisappearMs
	return t.Put(nsExpire, expireKey(r.Expire, r.Seq), []byte{})
}

// expireLoop deletes messages as they become due, until ctx ends.
func (c *Client) expireLoop(ctx context.Context) {
	for {
		next, err := c.expireDue(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.opts.Logger.Warn("deleting disappearing messages", "err", err)
			next = c.opts.Now().Add(time.Minute)
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = min(max(next.Sub(c.opts.Now()), 10*time.Millisecond), time.Hour)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-c.expireNow:
		case <-t.C:
		}
		t.Stop()
	}
}

// expireBatch bounds the messages one transaction deletes.
const expireBatch = 256

// expireDue deletes the messages due now and returns when the next one
// is due (zero: none).
func (c *Client) expireDue(ctx context.Context) (time.Time, error) {
	for {
		var next time.Time
		var files []string
		deleted := 0
		now := unixMs(c.opts.Now())
		err := c.update(ctx, func(t sealedTx) error {
			next, files, deleted = time.Time{}, nil, 0
			var due []string
			err := t.Scan(nsExpire, "", "", false, func(k string, _ []byte) (bool, error) {
				at, _, ok := strings.Cut(k, "/")
				var ms int64
				if _, err := fmt.Sscanf(at, "%x", &ms); !ok || err != nil {
					due = append(due, k) // unreadable: drop the entry
					return true, nil
				}
				if ms > now || len(due) == expireBatch {
					next = msTime(ms)
					return false, nil
				}
				due = append(due, k)
				return true, nil
			})
			if err != nil {
				return err
			}
			for _, k := range due {
				f, gone, err := c.expireOne(t, k)
				if err != nil {
					return err
				}
				files = append(files, f...)
				if gone {
					deleted++
				}
			}
			return nil
		})
		if err != nil {
			return time.Time{}, err
		}
		// The record is gone first: a file left by a crash here is only
		// a file, never a message that says it has none.
		for _, f := range files {
			os.Remove(f)
		}
		if deleted > 0 {
			c.publish(Event{Kind: EventResync})
		}
		if next.IsZero() || next.After(c.opts.Now()) {
			return next, nil
		}
	}
}

// expireOne deletes the message of index entry k, unless it is still to be
// sent (then it moves the entry a minute on). It returns the files to
// remove once the deletion is committed.
func (c *Client) expireOne(t sealedTx, k string) (files []string, deleted bool, err error) {
	if err := t.Delete(nsExpire, k); err != nil {
		return nil, false, err
	}
	_, sk, _ := strings.Cut(k, "/")
	seq, err := parseSeqKey(sk)
	if err != nil {
		return nil, false, nil
	}
	r, err := getMessage(t, seq)
	if err != nil {
		return nil, false, nil // deleted already
	}
	if r.State == StateQueued || r.State == StateUploading {
		r.Expire = unixMs(c.opts.Now().Add(time.Minute))
		if err := putMessage(t, r); err != nil {
			return nil, false, err
		}
		return nil, false, t.Put(nsExpire, expireKey(r.Expire, r.Seq), []byte{})
	}
	if x := r.Transfer; x != nil {
		if x.Staged != "" {
			files = append(files, filepath.Join(c.opts.Home, filesDir, x.Staged))
		}
		if x.Path != "" {
			files = append(files, x.Path)
		}
		if err := t.Delete(nsTransfer, seqKey(r.Seq)); err != nil {
			return nil, false, err
		}
	}
	return files, true, deleteMessage(t, r)
}
