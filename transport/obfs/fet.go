package obfs

import (
	"bytes"
	"math/bits"
	"math/rand/v2"
)

// FETExempt reports whether the Great Firewall's detector of fully
// encrypted traffic would let a TCP connection through, judging by its
// first client data packet, and which exemption applies. The rules are
// Algorithm 1 of Mingshi Wu et al., "How the Great Firewall of China
// Detects and Blocks Fully Encrypted Traffic", USENIX Security 2023 (§4):
// the GFW exempts the connection if ANY of the following holds, and
// otherwise blocks it.
//
//	Ex1: popcount(pkt)/len(pkt) ≤ 3.4 or ≥ 4.6 (average set bits per byte).
//	Ex2: the first six bytes are printable ASCII ([0x20, 0x7e]).
//	Ex3: more than 50% of the bytes are printable ASCII.
//	Ex4: more than 20 contiguous bytes are printable ASCII.
//	Ex5: the packet matches a TLS or HTTP fingerprint: the first three
//	     bytes match [\x16-\x17]\x03[\x00-\x09] (TLS), or the packet starts
//	     with an HTTP method and a space, "GET ", "PUT ", "POST " or
//	     "HEAD " (§4.3 found the match case-insensitive).
//
// rule is "Ex1" … "Ex5" for the first rule that matches, or "" when the
// packet would be blocked. An empty packet is not exempt (the detector
// judges the first packet that carries data).
func FETExempt(first []byte) (exempt bool, rule string) {
	n := len(first)
	if n == 0 {
		return false, ""
	}
	pop := 0
	printable := 0
	run, maxRun := 0, 0
	for _, b := range first {
		pop += bits.OnesCount8(b)
		if isPrintable(b) {
			printable++
			run++
			maxRun = max(maxRun, run)
		} else {
			run = 0
		}
	}
	// Ex1, compared in integers: pop/n ≤ 3.4 ⇔ 10·pop ≤ 34·n.
	if 10*pop <= 34*n || 10*pop >= 46*n {
		return true, "Ex1"
	}
	if n >= 6 && allPrintable(first[:6]) {
		return true, "Ex2"
	}
	if 2*printable > n {
		return true, "Ex3"
	}
	if maxRun > 20 {
		return true, "Ex4"
	}
	if matchesProtocol(first) {
		return true, "Ex5"
	}
	return false, ""
}

func isPrintable(b byte) bool { return b >= 0x20 && b <= 0x7e }

func allPrintable(p []byte) bool {
	for _, b := range p {
		if !isPrintable(b) {
			return false
		}
	}
	return true
}

var httpMethods = [][]byte{[]byte("GET "), []byte("PUT "), []byte("POST "), []byte("HEAD ")}

func matchesProtocol(p []byte) bool {
	if len(p) >= 3 && (p[0] == 0x16 || p[0] == 0x17) && p[1] == 0x03 && p[2] <= 0x09 {
		return true
	}
	for _, m := range httpMethods {
		if len(p) >= len(m) && bytes.EqualFold(p[:len(m)], m) {
			return true
		}
	}
	return false
}

// Shaping strategies for the client's first packet. Each connection picks
// one at random, with random parameters, so no single rule or byte pattern
// marks Magpie's first packets.
const (
	shapePrintablePrefix = iota // Ex2: a printable prefix of 6–63 bytes
	shapePrintableRun           // Ex4: 21–40 printable bytes somewhere in the padding
	shapeLowPopcount            // Ex1: padding of bytes with ≤ 2 set bits
	shapeHighPopcount           // Ex1: padding of bytes with ≥ 6 set bits
	numShapes
)

var lowPopBytes, highPopBytes []byte

func init() {
	for i := range 256 {
		switch c := bits.OnesCount8(uint8(i)); {
		case c <= 2:
			lowPopBytes = append(lowPopBytes, byte(i))
		case c >= 6:
			highPopBytes = append(highPopBytes, byte(i))
		}
	}
}

func fillPrintable(rng *rand.Rand, p []byte) {
	for i := range p {
		p[i] = byte(0x20 + rng.IntN(0x7f-0x20))
	}
}

func fillFrom(rng *rand.Rand, p []byte, set []byte) {
	for i := range p {
		p[i] = set[rng.IntN(len(set))]
	}
}

func fillRandom(rng *rand.Rand, p []byte) {
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
}

// shapePadding fills the prefix and the padding of a first packet
// according to strategy. The representative, mark, length and MAC are
// written afterwards by the caller and are uniformly random.
func shapePadding(rng *rand.Rand, strategy int, prefix, pad []byte) {
	switch strategy {
	case shapePrintablePrefix:
		fillPrintable(rng, prefix)
		fillRandom(rng, pad)
	case shapePrintableRun:
		fillRandom(rng, prefix)
		fillRandom(rng, pad)
		n := 21 + rng.IntN(20)
		if n > len(pad) {
			n = len(pad)
		}
		at := rng.IntN(len(pad) - n + 1)
		fillPrintable(rng, pad[at:at+n])
	case shapeLowPopcount:
		fillFrom(rng, prefix, lowPopBytes)
		fillFrom(rng, pad, lowPopBytes)
	case shapeHighPopcount:
		fillFrom(rng, prefix, highPopBytes)
		fillFrom(rng, pad, highPopBytes)
	}
}

// prefixRange returns the prefix lengths a strategy may use.
func prefixRange(strategy int) (lo, hi int) {
	if strategy == shapePrintablePrefix {
		return 6, maxPrefix
	}
	return 0, maxPrefix
}
