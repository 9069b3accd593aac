package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/magpie-im/magpie/content"
	"github.com/magpie-im/magpie/e2e"
	"github.com/magpie-im/magpie/e2e/senderkey"
	"github.com/magpie-im/magpie/group"
	"github.com/magpie-im/magpie/internal/clientconn"
)

// Sending to a group (Sender Keys): this device sends on one chain per
// group, under a distribution id it picks. Before a group message leaves,
// every member (this account's other devices included) who does not have
// the chain yet gets it, inside the 1:1 sessions, as a sender key message;
// then the message is encrypted once and handed to the server, which
// queues it for every member device. The group message keeps its id and,
// until the chain changes, its ciphertext, however often it is tried; a
// sender key sent twice (a crash before it was noted) is harmless.

// maySend says why user may not send to group id (whose record and state
// loading returned err), or nil.
func maySend(id GroupID, rec *groupRecord, st *group.State, user string, err error) error {
	switch {
	case err != nil:
		return err
	case rec == nil:
		return fmt.Errorf("%w: %s", ErrUnknownGroup, id)
	case rec.Refused != "":
		return fmt.Errorf("%w: %s", ErrGroupRefused, rec.Refused)
	case st.Role(user) == 0:
		return fmt.Errorf("%w: you are no longer in %q", ErrNotMember, st.Name)
	case !st.CanSend(user):
		return fmt.Errorf("%w: only the admins of %q may send to it", ErrForbidden, st.Name)
	}
	return nil
}

// checkGroupSend refuses to queue for a group this account cannot send to.
func (c *Client) checkGroupSend(ctx context.Context, id GroupID) error {
	me, _ := c.Account()
	return c.view(ctx, func(t sealedTx) error {
		rec, st, err := c.loadGroup(t, id)
		return maySend(id, rec, st, me.User, err)
	})
}

// sealedGroupMessage is a group message encrypted for a chain: kept in the
// outbox item so that a retry sends the same bytes (while the chain is
// the same).
type sealedGroupMessage struct {
	Dist       []byte `json:"dist"`
	Ciphertext []byte `json:"ct"`
}

// sendGroupItem sends an outbox item for a group: the sender key to the
// members who lack it, then the message, encrypted once.
func (c *Client) sendGroupItem(ctx context.Context, conn *clientconn.Conn, it *outboxItem, id GroupID, payload []byte) (clientconn.SendResult, int, error) {
	dist, members, err := c.prepareGroupSend(ctx, id)
	if err != nil {
		return clientconn.SendResult{}, 0, err
	}
	if err := c.distribute(ctx, conn, id, dist, members); err != nil {
		return clientconn.SendResult{}, 0, err
	}
	ct := it.Sealed
	if ct == nil || string(ct.Dist) != string(dist[:]) {
		pt, err := content.InGroup(payload, id)
		if err != nil {
			return clientconn.SendResult{}, 0, err
		}
		err = c.update(ctx, func(t sealedTx) error {
			b, err := e2e.GroupEncrypt(t, dist, pt, rand.Reader)
			if err != nil {
				return err
			}
			ct = &sealedGroupMessage{Dist: dist[:], Ciphertext: b}
			it.Sealed = ct
			return putJSON(t, nsOutbox, seqKey(it.Seq), it)
		})
		if err != nil {
			return clientconn.SendResult{}, 0, err
		}
	}
	res, err := conn.GroupSend(ctx, [16]byte(id), clientconn.MessageID(it.ID), ct.Ciphertext, false)
	return res, len(members) - 1, err
}

// prepareGroupSend checks that this account may still send to the group
// and returns its chain (a new one after someone left) and its members.
func (c *Client) prepareGroupSend(ctx context.Context, id GroupID) (senderkey.DistributionID, []string, error) {
	me, _ := c.Account()
	var dist senderkey.DistributionID
	var members []string
	err := c.update(ctx, func(t sealedTx) error {
		rec, st, err := c.loadGroup(t, id)
		if err := maySend(id, rec, st, me.User, err); err != nil {
			return err
		}
		members = groupMembers(st)
		if rec.Dist != nil {
			dist = senderkey.DistributionID(rec.Dist)
			return nil
		}
		if dist, err = e2e.NewDistributionID(rand.Reader); err != nil {
			return err
		}
		rec.Dist = dist[:]
		return c.saveGroup(t, id, rec, st, false)
	})
	return dist, members, err
}

// distribute sends this device's chain for dist to each member who does
// not have it yet, over the 1:1 sessions. A member who cannot get it for
// good (an account gone, keys never set up, a verified safety number that
// changed) is skipped: they cannot read this device's messages until that
// is fixed, but the others can.
func (c *Client) distribute(ctx context.Context, conn *clientconn.Conn, id GroupID, dist senderkey.DistributionID, members []string) error {
	var need []string
	err := c.view(ctx, func(t sealedTx) error {
		for _, u := range members {
			v, err := t.Get(nsGroupGiven, givenKey(id, dist[:], u))
			if err != nil {
				return err
			}
			if v == nil {
				need = append(need, u)
			}
		}
		return nil
	})
	if err != nil || len(need) == 0 {
		return err
	}
	s, err := c.sesame(ctx, conn)
	if err != nil {
		return err
	}
	var skdm []byte
	err = c.update(ctx, func(t sealedTx) error {
		var err error
		skdm, err = e2e.SenderKeyDistribution(t, dist, rand.Reader)
		return err
	})
	if err != nil {
		return err
	}
	payload, err := content.EncodeSenderKey(id, skdm)
	if err != nil {
		return err
	}
	for _, u := range need {
		// A fresh id each time: a member asking again (a device added
		// since) must get it again; a repeat after a crash is harmless.
		_, err := s.Send(ctx, u, NewMessageID(), payload, false)
		var se *clientconn.ServerError
		switch {
		case err == nil:
		case errors.Is(err, ErrUnknownUser), errors.Is(err, ErrNoKeys), errors.Is(err, ErrIdentityChanged), errors.Is(err, e2e.ErrNoContact):
			c.opts.Logger.Warn("a group member cannot get this device's sender key", "group", id.String(), "member", u, "err", err)
			continue // not marked: tried again with the next message
		case errors.As(err, &se):
			return err // for now (rate limits): the item waits and resumes here
		default:
			return err
		}
		err = c.update(ctx, func(t sealedTx) error { return t.Put(nsGroupGiven, givenKey(id, dist[:], u), []byte{}) })
		if err != nil {
			return err
		}
	}
	return nil
}

// groupTyping tells a group's connected members that this user started or
// stopped typing. Members who do not have this device's chain yet miss it.
func (c *Client) groupTyping(ctx context.Context, conn *clientconn.Conn, id GroupID, typing bool) error {
	var ct []byte
	err := c.update(ctx, func(t sealedTx) error {
		rec, _, err := c.loadGroup(t, id)
		if err != nil || rec == nil || rec.Dist == nil {
			return err
		}
		pt, err := content.InGroup(content.EncodeTyping(typing), id)
		if err != nil {
			return err
		}
		ct, err = e2e.GroupEncrypt(t, senderkey.DistributionID(rec.Dist), pt, rand.Reader)
		return err
	})
	if err != nil || ct == nil {
		return err
	}
	_, err = conn.GroupSend(ctx, [16]byte(id), clientconn.NewMessageID(), ct, true)
	return err
}
