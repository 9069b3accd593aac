// Package fingerprint computes Signal safety numbers: the 60-digit number
// two people read to each other, and the QR-code payload that one phone
// scans from the other, so that they can detect a man in the middle
// substituting identity keys.
//
// The construction is libsignal's NumericFingerprintGenerator
// (rust/protocol/src/fingerprint.rs at v0.90.0) with 5200 iterations and
// scannable format version 2, the values Signal's clients use, so that a
// Magpie safety number can be compared with one computed by a Signal
// library for the same identities.
package fingerprint

import (
	"crypto/sha512"
	"crypto/subtle"
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/magpie-im/magpie/e2e/curve"
)

// Iterations is the number of SHA-512 rounds per fingerprint. It slows a
// search for a key whose number collides with someone else's.
const Iterations = 5200

// ScannableVersion is the version field of the QR-code payload, the one
// Signal's clients currently send. libsignal's tests show that versions 1
// and 2 share the digits and the fingerprints and differ only in this
// field; codes of different versions never compare equal.
const ScannableVersion = 2

// fingerprintVersion prefixes the hash input. It is the iteration format's
// own version (0), distinct from ScannableVersion.
var fingerprintVersion = [2]byte{0, 0}

const (
	displayBytes  = 30 // six 5-byte chunks → six 5-digit groups per half
	scannableSize = 32 // bytes of each hash carried in the QR code
)

var (
	// ErrVersionMismatch reports a scanned code of another version: the
	// two apps disagree on the format, which says nothing about the keys.
	ErrVersionMismatch = errors.New("fingerprint: version mismatch")
	// ErrInvalidFingerprint reports a scanned payload that is not a
	// CombinedFingerprints message with both fingerprints.
	ErrInvalidFingerprint = errors.New("fingerprint: invalid scanned fingerprint")
)

// hashIdentity is one party's fingerprint: with K = TypeDJB ‖ u (33 bytes),
// H_0 = SHA-512(0x0000 ‖ K ‖ id ‖ K) and H_i = SHA-512(H_{i-1} ‖ K), up to
// H_{Iterations-1}.
func hashIdentity(id []byte, key curve.PublicKey) [sha512.Size]byte {
	k := key.Serialize()
	buf := make([]byte, 0, len(fingerprintVersion)+2*len(k)+len(id))
	buf = append(buf, fingerprintVersion[:]...)
	buf = append(buf, k...)
	buf = append(buf, id...)
	buf = append(buf, k...)
	h := sha512.Sum512(buf)

	next := make([]byte, sha512.Size+len(k))
	copy(next[sha512.Size:], k)
	for i := 1; i < Iterations; i++ {
		copy(next, h[:])
		h = sha512.Sum512(next)
	}
	return h
}

// digits encodes the first 30 bytes of a fingerprint as 30 digits: each
// 5-byte chunk, read as a big-endian 40-bit integer, mod 100000, as five
// zero-padded digits.
func digits(h []byte) string {
	out := make([]byte, 0, 30)
	for i := 0; i < displayBytes; i += 5 {
		var x uint64
		for _, b := range h[i : i+5] {
			x = x<<8 | uint64(b)
		}
		out = fmt.Appendf(out, "%05d", x%100000)
	}
	return string(out)
}

// Displayable returns the 60-digit safety number of a conversation between
// the local identity (localID, localKey) and the remote one. The two
// 30-digit halves are ordered by string comparison, smaller first, so both
// parties compute the same number whichever side they are on.
func Displayable(localID []byte, localKey curve.PublicKey, remoteID []byte, remoteKey curve.PublicKey) string {
	lh := hashIdentity(localID, localKey)
	rh := hashIdentity(remoteID, remoteKey)
	l, r := digits(lh[:]), digits(rh[:])
	if l < r {
		return l + r
	}
	return r + l
}

// Scannable returns the QR-code payload: the protobuf message
// signal.proto.fingerprint.CombinedFingerprints (libsignal's
// fingerprint.proto) with version 2 and the first 32 bytes of the local and
// remote fingerprints, in that order (unlike Displayable, not sorted: the
// scanner checks that the roles are swapped).
func Scannable(localID []byte, localKey curve.PublicKey, remoteID []byte, remoteKey curve.PublicKey) []byte {
	lh := hashIdentity(localID, localKey)
	rh := hashIdentity(remoteID, remoteKey)
	return encodeCombined(ScannableVersion, lh[:scannableSize], rh[:scannableSize])
}

// Field numbers of fingerprint.proto:
//
//	message LogicalFingerprint { optional bytes content = 1; }
//	message CombinedFingerprints {
//	  optional uint32 version = 1;
//	  optional LogicalFingerprint local_fingerprint = 2;
//	  optional LogicalFingerprint remote_fingerprint = 3;
//	}
//
// Encoded by hand with protowire: two messages of fixed shape do not need
// generated code. The output is the canonical encoding (fields in order),
// byte-identical to libsignal's.
const (
	fieldVersion  protowire.Number = 1
	fieldLocal    protowire.Number = 2
	fieldRemote   protowire.Number = 3
	fieldContent  protowire.Number = 1
	maxScannedLen                  = 1024 // far above the 74 bytes of a real code
)

func encodeCombined(version uint32, local, remote []byte) []byte {
	var b []byte
	b = protowire.AppendTag(b, fieldVersion, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(version))
	for _, f := range []struct {
		n       protowire.Number
		content []byte
	}{{fieldLocal, local}, {fieldRemote, remote}} {
		var inner []byte
		inner = protowire.AppendTag(inner, fieldContent, protowire.BytesType)
		inner = protowire.AppendBytes(inner, f.content)
		b = protowire.AppendTag(b, f.n, protowire.BytesType)
		b = protowire.AppendBytes(b, inner)
	}
	return b
}

type combined struct {
	version       uint32
	hasVersion    bool
	local, remote []byte // nil when absent
}

// decodeCombined parses CombinedFingerprints with proto2 semantics: unknown
// fields are skipped, a repeated scalar keeps its last value, and a
// repeated message field is merged (so its last content wins).
func decodeCombined(b []byte) (combined, error) {
	var c combined
	if len(b) > maxScannedLen {
		return c, fmt.Errorf("%w: %d bytes", ErrInvalidFingerprint, len(b))
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return c, fmt.Errorf("%w: %w", ErrInvalidFingerprint, protowire.ParseError(n))
		}
		b = b[n:]
		switch {
		case num == fieldVersion && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return c, fmt.Errorf("%w: version: %w", ErrInvalidFingerprint, protowire.ParseError(m))
			}
			c.version, c.hasVersion = uint32(v), true // proto uint32 truncates
			n = m
		case (num == fieldLocal || num == fieldRemote) && typ == protowire.BytesType:
			inner, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return c, fmt.Errorf("%w: fingerprint: %w", ErrInvalidFingerprint, protowire.ParseError(m))
			}
			dst := &c.local
			if num == fieldRemote {
				dst = &c.remote
			}
			if err := decodeLogical(inner, dst); err != nil {
				return c, err
			}
			n = m
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return c, fmt.Errorf("%w: field %d: %w", ErrInvalidFingerprint, num, protowire.ParseError(n))
			}
		}
		b = b[n:]
	}
	return c, nil
}

func decodeLogical(b []byte, content *[]byte) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: %w", ErrInvalidFingerprint, protowire.ParseError(n))
		}
		b = b[n:]
		if num == fieldContent && typ == protowire.BytesType {
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return fmt.Errorf("%w: content: %w", ErrInvalidFingerprint, protowire.ParseError(m))
			}
			*content = append([]byte{}, v...)
			n = m
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("%w: field %d: %w", ErrInvalidFingerprint, num, protowire.ParseError(n))
			}
		}
		b = b[n:]
	}
	return nil
}

// CompareScannable reports whether a scanned code, theirs, matches our own
// code, ours (as made by Scannable), as libsignal's
// ScannableFingerprint::compare does: the versions must be equal
// (ErrVersionMismatch otherwise), and their local fingerprint must equal
// our remote one and their remote ours local, compared in constant time.
// A false result with a nil error means the keys differ: a possible man in
// the middle.
func CompareScannable(ours, theirs []byte) (bool, error) {
	o, err := decodeCombined(ours)
	if err != nil {
		return false, fmt.Errorf("our code: %w", err)
	}
	if !o.hasVersion || o.local == nil || o.remote == nil {
		return false, fmt.Errorf("our code: %w: missing field", ErrInvalidFingerprint)
	}
	t, err := decodeCombined(theirs)
	if err != nil {
		return false, fmt.Errorf("scanned code: %w", err)
	}
	// libsignal treats a missing version as 0, so it mismatches.
	if t.version != o.version {
		return false, fmt.Errorf("%w: scanned %d, ours %d", ErrVersionMismatch, t.version, o.version)
	}
	if t.local == nil || t.remote == nil {
		return false, fmt.Errorf("scanned code: %w: missing fingerprint", ErrInvalidFingerprint)
	}
	same1 := subtle.ConstantTimeCompare(t.local, o.remote)
	same2 := subtle.ConstantTimeCompare(t.remote, o.local)
	return same1&same2 == 1, nil
}
