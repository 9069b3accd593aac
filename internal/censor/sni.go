package censor

import (
	"errors"
	"strings"

	"golang.org/x/crypto/cryptobyte"
)

// TLS limits used while reassembling a ClientHello (RFC 8446 §5.1, §4).
const (
	tlsRecordHeader     = 5
	tlsMaxRecordPayload = 1<<14 + 2048 // TLSCiphertext may carry 2^14+2048
	tlsMaxClientHello   = 1 << 16      // far more than any real ClientHello
	tlsHandshakeHeader  = 4
	tlsTypeHandshake    = 0x16
	tlsTypeClientHello  = 1
	tlsExtServerName    = 0
	tlsServerNameHost   = 0
)

var errNotClientHello = errors.New("censor: not a TLS ClientHello")

// parseClientHelloSNI reads the TLS records at the start of buf and returns
// the ClientHello's server_name (RFC 6066 §3), "" if it has none. done is
// false (with a nil error) when buf ends before the ClientHello does: the
// caller should read more and call again with the longer buffer. The
// handshake message may be split over several records and the records over
// several reads. err is set when buf is not a ClientHello.
func parseClientHelloSNI(buf []byte) (sni string, done bool, err error) {
	body, done, err := clientHelloBody(buf)
	if !done || err != nil {
		return "", done, err
	}
	sni, err = clientHelloServerName(body)
	return sni, err == nil, err
}

// clientHelloBody reassembles the ClientHello handshake message from the
// TLS records at the start of buf and returns its body (after the 4-byte
// handshake header), with done and err as parseClientHelloSNI's.
func clientHelloBody(buf []byte) (body []byte, done bool, err error) {
	var hs []byte
	for {
		if len(hs) >= tlsHandshakeHeader {
			if hs[0] != tlsTypeClientHello {
				return nil, false, errNotClientHello
			}
			n := int(hs[1])<<16 | int(hs[2])<<8 | int(hs[3])
			if n > tlsMaxClientHello {
				return nil, false, errNotClientHello
			}
			if len(hs) >= tlsHandshakeHeader+n {
				return hs[tlsHandshakeHeader : tlsHandshakeHeader+n], true, nil
			}
		}
		if len(buf) < tlsRecordHeader {
			return nil, false, nil
		}
		if buf[0] != tlsTypeHandshake || buf[1] != 0x03 {
			return nil, false, errNotClientHello
		}
		n := int(buf[3])<<8 | int(buf[4])
		if n == 0 || n > tlsMaxRecordPayload {
			return nil, false, errNotClientHello
		}
		if len(buf) < tlsRecordHeader+n {
			return nil, false, nil
		}
		hs = append(hs, buf[tlsRecordHeader:tlsRecordHeader+n]...)
		buf = buf[tlsRecordHeader+n:]
	}
}

// clientHelloServerName parses a ClientHello body (RFC 8446 §4.1.2) and
// returns its host_name server name, or "" if there is none.
func clientHelloServerName(body []byte) (string, error) {
	_, _, exts, err := splitClientHello(body)
	if err != nil {
		return "", err
	}
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return "", errNotClientHello
		}
		if typ != tlsExtServerName {
			continue
		}
		var list cryptobyte.String
		if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() {
			return "", errNotClientHello
		}
		for !list.Empty() {
			var nameType uint8
			var name cryptobyte.String
			if !list.ReadUint8(&nameType) || !list.ReadUint16LengthPrefixed(&name) {
				return "", errNotClientHello
			}
			if nameType == tlsServerNameHost {
				return string(name), nil
			}
		}
		return "", nil
	}
	return "", nil
}

// splitClientHello parses a ClientHello body (RFC 8446 §4.1.2) into its
// legacy version, cipher suites and extensions (empty if it has none).
func splitClientHello(body []byte) (version uint16, suites, exts cryptobyte.String, err error) {
	s := cryptobyte.String(body)
	var random, sessionID, compression cryptobyte.String
	if !s.ReadUint16(&version) || !s.ReadBytes((*[]byte)(&random), 32) ||
		!s.ReadUint8LengthPrefixed(&sessionID) || !s.ReadUint16LengthPrefixed(&suites) ||
		!s.ReadUint8LengthPrefixed(&compression) {
		return 0, nil, nil, errNotClientHello
	}
	if !s.Empty() && (!s.ReadUint16LengthPrefixed(&exts) || !s.Empty()) {
		return 0, nil, nil, errNotClientHello
	}
	return version, suites, exts, nil
}

// matchSNI reports which pattern, if any, blocks name. A pattern
// "example.com" matches that name only; "*.example.com" matches its
// subdomains; ".example.com" matches the name and its subdomains. Matching
// ignores case and a trailing dot.
func matchSNI(name string, patterns []string) (string, bool) {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if name == "" {
		return "", false
	}
	for _, p := range patterns {
		q := strings.TrimSuffix(strings.ToLower(p), ".")
		switch {
		case strings.HasPrefix(q, "*."):
			if strings.HasSuffix(name, q[1:]) {
				return p, true
			}
		case strings.HasPrefix(q, "."):
			if name == q[1:] || strings.HasSuffix(name, q) {
				return p, true
			}
		case q != "" && name == q:
			return p, true
		}
	}
	return "", false
}
