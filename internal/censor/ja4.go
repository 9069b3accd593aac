package censor

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/crypto/cryptobyte"
)

// TLS extension numbers JA4 treats specially.
const (
	tlsExtALPN              = 16
	tlsExtSignatureAlgs     = 13
	tlsExtSupportedVersions = 43
)

// JA4 returns the JA4 fingerprint (FoxIO's JA4 TLS client fingerprint,
// github.com/FoxIO-LLC/ja4, technical details) of the ClientHello at the
// start of buf, which holds TLS records as sent on a TCP connection:
//
//	t13d1517h2_8daaf6152771_cb7bf5808d99
//
// that is the protocol (t: TCP), the highest offered TLS version, d or i
// (server_name present or not), the number of cipher suites and of
// extensions, the first and last character of the first ALPN value; then
// the first 12 hex digits of the SHA-256 of the sorted cipher suites; then
// those of the sorted extensions (without server_name and ALPN), an
// underscore and the signature algorithms in the order sent. GREASE values
// (RFC 8701) are ignored everywhere. A censor computes exactly this to
// single out clients that are not the browser they claim to be.
func JA4(buf []byte) (string, error) {
	body, done, err := clientHelloBody(buf)
	if err != nil {
		return "", err
	}
	if !done {
		return "", fmt.Errorf("%w: truncated", errNotClientHello)
	}
	legacy, suites, exts, err := splitClientHello(body)
	if err != nil {
		return "", err
	}
	var ciphers, extensions, sigAlgs []uint16
	for !suites.Empty() {
		var c uint16
		if !suites.ReadUint16(&c) {
			return "", errNotClientHello
		}
		if !isGREASE(c) {
			ciphers = append(ciphers, c)
		}
	}
	version := legacy
	sni := "i"
	alpn := "00"
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return "", errNotClientHello
		}
		if isGREASE(typ) {
			continue
		}
		extensions = append(extensions, typ)
		switch typ {
		case tlsExtServerName:
			sni = "d"
		case tlsExtALPN:
			var list, first cryptobyte.String
			if !data.ReadUint16LengthPrefixed(&list) || !list.ReadUint8LengthPrefixed(&first) {
				return "", errNotClientHello
			}
			if len(first) > 0 {
				alpn = alpnChars(first)
			}
		case tlsExtSignatureAlgs:
			var list cryptobyte.String
			if !data.ReadUint16LengthPrefixed(&list) {
				return "", errNotClientHello
			}
			for !list.Empty() {
				var a uint16
				if !list.ReadUint16(&a) {
					return "", errNotClientHello
				}
				if !isGREASE(a) {
					sigAlgs = append(sigAlgs, a)
				}
			}
		case tlsExtSupportedVersions:
			var list cryptobyte.String
			if !data.ReadUint8LengthPrefixed(&list) {
				return "", errNotClientHello
			}
			version = 0
			for !list.Empty() {
				var v uint16
				if !list.ReadUint16(&v) {
					return "", errNotClientHello
				}
				if !isGREASE(v) && v > version {
					version = v
				}
			}
		}
	}
	var rest []uint16
	for _, e := range extensions {
		if e != tlsExtServerName && e != tlsExtALPN {
			rest = append(rest, e)
		}
	}
	c := hexList(sorted(rest))
	if len(sigAlgs) > 0 {
		c += "_" + hexList(sigAlgs)
	}
	a := fmt.Sprintf("t%s%s%02d%02d%s", ja4Version(version), sni, min(len(ciphers), 99), min(len(extensions), 99), alpn)
	return a + "_" + hash12(hexList(sorted(ciphers)), len(ciphers) == 0) + "_" + hash12(c, len(rest) == 0), nil
}

// isGREASE reports whether v is one of RFC 8701's reserved values
// (0x0a0a, 0x1a1a, … 0xfafa).
func isGREASE(v uint16) bool { return v&0x0f0f == 0x0a0a && v>>8 == v&0xff }

func ja4Version(v uint16) string {
	switch v {
	case 0x0304:
		return "13"
	case 0x0303:
		return "12"
	case 0x0302:
		return "11"
	case 0x0301:
		return "10"
	case 0x0300:
		return "s3"
	}
	return "00"
}

// alpnChars is the first and last character of an ALPN value, or the
// first and last hex digit of its bytes if either is not alphanumeric.
func alpnChars(v []byte) string {
	alnum := func(b byte) bool {
		return b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z'
	}
	first, last := v[0], v[len(v)-1]
	if alnum(first) && alnum(last) {
		return string([]byte{first, last})
	}
	h := hex.EncodeToString([]byte{first, last})
	return h[:1] + h[3:]
}

func sorted(v []uint16) []uint16 {
	v = slices.Clone(v)
	slices.Sort(v)
	return v
}

func hexList(v []uint16) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = fmt.Sprintf("%04x", x)
	}
	return strings.Join(s, ",")
}

func hash12(s string, empty bool) string {
	if empty {
		return "000000000000"
	}
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:12]
}
