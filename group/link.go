package group

import (
	"encoding/base64"
	"fmt"
	"io"
	"strings"

	"github.com/magpie-im/magpie/e2e/curve"
)

// LinkPrefix starts the text form of a group link.
const LinkPrefix = "magpie-group:"

// linkText is the encoding after LinkPrefix: the group id and the link's
// private key, 48 bytes, in unpadded base64url (64 characters, without
// padding bits).
var linkText = base64.RawURLEncoding

// LinkSecret is a group's join link: the group and the link's private key.
// Whoever holds it can join (State.Join), so members share it only with
// people they would let in; the server never sees it, only the public key
// (in the SetLink that turned it on). String does not show the key, so
// that a LinkSecret logged by mistake gives nothing away: Encode does.
type LinkSecret struct {
	Group [16]byte
	Key   curve.PrivateKey
}

// NewLink makes a new link for the group id, and its public key, which an
// admin puts in the log to turn it on: SetLink{Key: &pub}.
func NewLink(id [16]byte, random io.Reader) (LinkSecret, curve.PublicKey, error) {
	kp, err := curve.GenerateKeyPair(random)
	if err != nil {
		return LinkSecret{}, curve.PublicKey{}, err
	}
	return LinkSecret{Group: id, Key: kp.Private}, kp.Public, nil
}

// Encode is the link's text form, to share: LinkPrefix followed by the
// group id and the private key in unpadded base64url.
func (l LinkSecret) Encode() string {
	return LinkPrefix + linkText.EncodeToString(append(l.Group[:], l.Key[:]...))
}

// String names the group, without the secret.
func (l LinkSecret) String() string { return fmt.Sprintf("group link for %x", l.Group) }

// GoString keeps the secret out of %#v too.
func (l LinkSecret) GoString() string { return "group.LinkSecret{" + l.String() + "}" }

// ParseLink decodes the text form of a link. White space around it is
// ignored.
func ParseLink(s string) (LinkSecret, error) {
	rest, ok := strings.CutPrefix(strings.TrimSpace(s), LinkPrefix)
	if !ok {
		return LinkSecret{}, fmt.Errorf("%w: a group link starts with %q", ErrMalformed, LinkPrefix)
	}
	var l LinkSecret
	if len(rest) != linkText.EncodedLen(len(l.Group)+len(l.Key)) {
		return LinkSecret{}, fmt.Errorf("%w: a group link of the wrong length; it may be cut short", ErrMalformed)
	}
	b, err := linkText.DecodeString(rest)
	// The decoder skips line breaks, so text of the right length can hold
	// fewer bytes.
	if err != nil || len(b) != len(l.Group)+len(l.Key) {
		return LinkSecret{}, fmt.Errorf("%w: a group link that is not base64url; it may be mistyped", ErrMalformed)
	}
	copy(l.Group[:], b)
	copy(l.Key[:], b[len(l.Group):])
	if l.Key != l.Key.Clamp() {
		return LinkSecret{}, fmt.Errorf("%w: a group link that no Magpie made", ErrMalformed)
	}
	return l, nil
}
