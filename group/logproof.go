package group

import (
	"fmt"
	"io"

	"github.com/magpie-im/magpie/e2e/xeddsa"
)

// Reading a group's log takes membership, or the join link: someone about
// to join by link needs the log to make their Join (which binds the
// group's head), and the server, which never sees the link's private key,
// checks a proof instead: the link's signature over the group and the
// requesting user. The proof is bound to the user so that nobody else can
// use it, and separated by its prefix from every other signature made
// with the link's key (Joins sign "magpie group change v1\x00" ‖ change).

// logProofDomain starts the message a log proof signs.
const logProofDomain = "magpie group log v1\x00"

// LogProofSize is the size of a log proof.
const LogProofSize = xeddsa.SignatureSize

func logProofMessage(id [16]byte, user string) []byte {
	return append(append([]byte(logProofDomain), id[:]...), user...)
}

// LogProof proves to the server that user holds the group's link, so that
// it lets them read the group's log.
func (l LinkSecret) LogProof(user string, random io.Reader) ([]byte, error) {
	return xsign(l.Key, logProofMessage(l.Group, user), random)
}

// CheckLogProof verifies a LogProof that user holds the group's current
// link. It fails (ErrForbidden) when links are off or the link changed.
func (s *State) CheckLogProof(user string, proof []byte) error {
	if s.LinkKey == nil || len(proof) != LogProofSize {
		return fmt.Errorf("%w: no join link to prove", ErrForbidden)
	}
	if !xeddsa.Verify(*s.LinkKey, logProofMessage(s.ID, user), [LogProofSize]byte(proof)) {
		return fmt.Errorf("%w: the proof is not by the group's current link", ErrBadSignature)
	}
	return nil
}
