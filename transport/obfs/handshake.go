package obfs

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"hash"
	"math/rand/v2"
	"time"

	"golang.org/x/crypto/curve25519"
)

// Handshake messages (see doc.go for the full layout):
//
//	client → server: prefix ‖ X' ‖ M_C ‖ L_C ‖ P_C ‖ MAC_C
//	server → client: Y' ‖ M_S ‖ L_S ‖ AUTH ‖ P_S ‖ MAC_S
const (
	protoID = "magpie-obfs-1"

	reprLen = 32
	markLen = 16
	lenLen  = 2
	macLen  = 16
	authLen = 32

	// maxPrefix bounds the bytes before the client's representative; the
	// server tries each offset in [0, maxPrefix] for the mark.
	maxPrefix = 63
	// The client's first packet is one write of at most maxFirstPacket
	// bytes (one TCP segment on any path with a 1500-byte MTU).
	minFirstPacket = 256
	maxFirstPacket = 1400
	helloFixed     = reprLen + markLen + lenLen + macLen

	maxServerPad   = 1024
	serverFixed    = reprLen + markLen + lenLen + authLen + macLen
	maxServerReply = serverFixed + maxServerPad
)

// Domain-separation labels for the HMACs keyed by the cert.
const (
	labelClientMark = 'M'
	labelClientMAC  = 'C'
	labelServerMark = 'm'
	labelServerMAC  = 'S'
)

// handshakeKey is what both sides know from the cert.
type handshakeKey struct {
	nodeID [20]byte
	public [32]byte
	key    []byte // HMAC-SHA256 key: public ‖ nodeID
}

func newHandshakeKey(nodeID [20]byte, public [32]byte) *handshakeKey {
	k := &handshakeKey{nodeID: nodeID, public: public}
	k.key = append(append([]byte{}, public[:]...), nodeID[:]...)
	return k
}

func (k *handshakeKey) hmac() hash.Hash { return hmac.New(sha256.New, k.key) }

// markAndMask returns the mark that follows a representative and the mask
// that hides the padding length after it: HMAC(K, label ‖ repr) split into
// its first 16 bytes and the next two.
func (k *handshakeKey) markAndMask(h hash.Hash, label byte, repr []byte) (mark [markLen]byte, mask uint16) {
	h.Reset()
	h.Write([]byte{label})
	h.Write(repr)
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	copy(mark[:], sum[:markLen])
	return mark, binary.BigEndian.Uint16(sum[markLen:])
}

// mac is HMAC(K, label ‖ msg ‖ epoch hour), truncated to 16 bytes.
func (k *handshakeKey) mac(h hash.Hash, label byte, msg []byte, hour int64) (out [macLen]byte) {
	h.Reset()
	h.Write([]byte{label})
	h.Write(msg)
	var hb [8]byte
	binary.BigEndian.PutUint64(hb[:], uint64(hour))
	h.Write(hb[:])
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	copy(out[:], sum[:macLen])
	return out
}

func epochHour(t time.Time) int64 {
	s := t.Unix()
	if s < 0 {
		return (s - 3599) / 3600
	}
	return s / 3600
}

// buildClientHello makes the client's first packet, shaped with strategy
// so that FETExempt accepts it.
func buildClientHello(rng *rand.Rand, hk *handshakeKey, eph *ephemeralKey, hour int64, strategy int) []byte {
	h := hk.hmac()
	for attempt := 0; ; attempt++ {
		if attempt >= 8 {
			strategy = shapePrintablePrefix // always exempt (Ex2)
		}
		lo, hi := prefixRange(strategy)
		pre := lo + rng.IntN(hi-lo+1)
		total := minFirstPacket + rng.IntN(maxFirstPacket-minFirstPacket+1)
		padLen := total - pre - helloFixed
		pkt := make([]byte, total)
		padAt := pre + reprLen + markLen + lenLen
		shapePadding(rng, strategy, pkt[:pre], pkt[padAt:padAt+padLen])
		copy(pkt[pre:], eph.repr[:])
		mark, mask := hk.markAndMask(h, labelClientMark, eph.repr[:])
		copy(pkt[pre+reprLen:], mark[:])
		binary.BigEndian.PutUint16(pkt[pre+reprLen+markLen:], uint16(padLen)^mask)
		mac := hk.mac(h, labelClientMAC, pkt[:total-macLen], hour)
		copy(pkt[total-macLen:], mac[:])
		if ok, _ := FETExempt(pkt); ok {
			return pkt
		}
	}
}

type helloStatus int

const (
	helloNeedMore helloStatus = iota
	helloInvalid
	helloOK
)

// clientHello is a parsed, authenticated first message.
type clientHello struct {
	repr [reprLen]byte
	mark [markLen]byte // replay-cache key: it is determined by the representative
	hour int64         // the epoch hour the MAC was made for
}

// parseClientHello examines the bytes received so far on a new server
// connection. It looks for the mark after a representative at each offset
// in [0, maxPrefix], then checks the length and the MAC for the hours
// around now. It says helloNeedMore while a valid message could still
// arrive, helloInvalid once none can, and helloOK with the message when
// buf is exactly one valid first message. The caller, not this function,
// decides when to close: an invalid connection is held to its deadline.
func parseClientHello(hk *handshakeKey, buf []byte, nowHour int64) (helloStatus, clientHello) {
	return new(helloScan).parse(hk, buf, nowHour)
}

// helloScan remembers, across calls on a growing buffer, which offsets
// have been ruled out, so each offset costs one HMAC however the bytes
// trickle in.
type helloScan struct {
	next int // first offset not yet ruled out
}

func (s *helloScan) parse(hk *handshakeKey, buf []byte, nowHour int64) (helloStatus, clientHello) {
	var ch clientHello
	if len(buf) > maxFirstPacket {
		return helloInvalid, ch
	}
	h := hk.hmac()
	for pre := s.next; pre <= maxPrefix && pre+reprLen+markLen+lenLen <= len(buf); pre++ {
		repr := buf[pre : pre+reprLen]
		mark, mask := hk.markAndMask(h, labelClientMark, repr)
		if subtle.ConstantTimeCompare(mark[:], buf[pre+reprLen:pre+reprLen+markLen]) != 1 {
			s.next = pre + 1
			continue
		}
		padLen := int(binary.BigEndian.Uint16(buf[pre+reprLen+markLen:]) ^ mask)
		total := pre + helloFixed + padLen
		switch {
		case total > maxFirstPacket:
			return helloInvalid, ch
		case len(buf) < total:
			return helloNeedMore, ch
		case len(buf) > total:
			// A client sends nothing more before the server answers.
			return helloInvalid, ch
		}
		got := buf[total-macLen:]
		for _, hour := range [3]int64{nowHour, nowHour - 1, nowHour + 1} {
			want := hk.mac(h, labelClientMAC, buf[:total-macLen], hour)
			if subtle.ConstantTimeCompare(want[:], got) == 1 {
				copy(ch.repr[:], repr)
				ch.mark = mark
				ch.hour = hour
				return helloOK, ch
			}
		}
		return helloInvalid, ch
	}
	if len(buf) >= maxPrefix+reprLen+markLen+lenLen {
		return helloInvalid, ch // every offset was tried
	}
	return helloNeedMore, ch
}

// buildServerReply makes the server's answer.
func buildServerReply(rng *rand.Rand, hk *handshakeKey, eph *ephemeralKey, auth *[authLen]byte, hour int64) []byte {
	h := hk.hmac()
	padLen := rng.IntN(maxServerPad + 1)
	total := serverFixed + padLen
	pkt := make([]byte, total)
	copy(pkt, eph.repr[:])
	mark, mask := hk.markAndMask(h, labelServerMark, eph.repr[:])
	copy(pkt[reprLen:], mark[:])
	binary.BigEndian.PutUint16(pkt[reprLen+markLen:], uint16(padLen)^mask)
	copy(pkt[reprLen+markLen+lenLen:], auth[:])
	fillRandom(rng, pkt[reprLen+markLen+lenLen+authLen:total-macLen])
	mac := hk.mac(h, labelServerMAC, pkt[:total-macLen], hour)
	copy(pkt[total-macLen:], mac[:])
	return pkt
}

// sessionKeys are the keys of the data phase, one set per direction.
type sessionKeys struct {
	clientAEAD, clientLen [32]byte // client → server
	serverAEAD, serverLen [32]byte // server → client
}

var errBadPoint = errors.New("obfs: bad public key")

// ntor runs the key derivation of the ntor handshake (Goldberg, Stebila,
// Ustaoglu, "Anonymity and one-way authentication in key exchange
// protocols", 2012; as adapted by obfs4) over X25519:
//
//	secret = DH(x,Y) ‖ DH(x,B) ‖ ID ‖ B ‖ X ‖ Y ‖ PROTOID
//	verify = HMAC(PROTOID:verify, secret)
//	AUTH   = HMAC(PROTOID:mac, verify ‖ ID ‖ B ‖ Y ‖ X ‖ PROTOID ‖ "Server")
//	keys   = HKDF-SHA256(secret, salt PROTOID:key_extract, info PROTOID:key_expand)
//
// The client computes the DHs with x (ephemeral) against Y and B; the
// server with y and b against X. AUTH proves the server holds b.
func ntor(dhEph, dhStatic []byte, hk *handshakeKey, X, Y *[32]byte) (sessionKeys, [authLen]byte) {
	var keys sessionKeys
	var auth [authLen]byte
	secret := make([]byte, 0, 32*5+20+len(protoID))
	secret = append(secret, dhEph...)
	secret = append(secret, dhStatic...)
	secret = append(secret, hk.nodeID[:]...)
	secret = append(secret, hk.public[:]...)
	secret = append(secret, X[:]...)
	secret = append(secret, Y[:]...)
	secret = append(secret, protoID...)

	vm := hmac.New(sha256.New, []byte(protoID+":verify"))
	vm.Write(secret)
	verify := vm.Sum(nil)
	am := hmac.New(sha256.New, []byte(protoID+":mac"))
	am.Write(verify)
	am.Write(hk.nodeID[:])
	am.Write(hk.public[:])
	am.Write(Y[:])
	am.Write(X[:])
	am.Write([]byte(protoID + "Server"))
	am.Sum(auth[:0])

	prk, err := hkdf.Extract(sha256.New, secret, []byte(protoID+":key_extract"))
	if err != nil {
		panic(err)
	}
	okm, err := hkdf.Expand(sha256.New, prk, protoID+":key_expand", 128)
	if err != nil {
		panic(err)
	}
	copy(keys.clientAEAD[:], okm[0:32])
	copy(keys.clientLen[:], okm[32:64])
	copy(keys.serverAEAD[:], okm[64:96])
	copy(keys.serverLen[:], okm[96:128])
	clear(secret)
	clear(prk)
	clear(okm)
	return keys, auth
}

func x25519(scalar, point []byte) ([]byte, error) {
	out, err := curve25519.X25519(scalar, point)
	if err != nil {
		return nil, errBadPoint
	}
	return out, nil
}
