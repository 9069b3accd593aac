package censor

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"
)

// The fully-encrypted-traffic rule follows Wu, Sippe, Sivakumar, Burg,
// Anderson, Wang, Ensafi and Houmansadr, "How the Great Firewall of China
// Detects and Blocks Fully Encrypted Traffic", USENIX Security 2023
// (Algorithm 1 and section 4). From November 2021 the GFW looked at the
// first data packet a client sends on a TCP connection and blocked the
// connection unless the packet matched one of five exemptions. Detected
// flows were black-holed, and the (client IP, server IP, server port)
// 3-tuple stayed black-holed for 180 seconds. The rule was applied to about
// 26% of connections (section 4.6), and only to some destination IP ranges
// (popular VPS providers), which this emulator does not model.

// FET exemption thresholds (Wu et al. 2023, section 4.1 and Algorithm 1).
const (
	// Ex1: the average number of set bits per byte is at most 3.4 or at
	// least 4.6. Uniformly random data averages 4.0. As exact fractions:
	// 3.4 = 17/5 and 4.6 = 23/5.
	fetPopcountLowNum, fetPopcountHighNum, fetPopcountDen = 17, 23, 5
	// Ex2: the first six bytes are all printable ASCII.
	fetPrefixPrintable = 6
	// Ex4: more than 20 contiguous printable ASCII bytes.
	fetMaxPrintableRun = 20
)

// isPrintable reports whether b is printable ASCII, 0x20–0x7e, as the paper
// defines it.
func isPrintable(b byte) bool { return b >= 0x20 && b <= 0x7e }

// httpPrefixes are the HTTP request prefixes of exemption Ex5. The paper
// found that the first four bytes "GET ", "PUT ", "POST" and "HEAD" exempt a
// packet (section 4.1); the other methods are listed for completeness (any
// request starting with them is already exempt by Ex2).
var httpPrefixes = [][]byte{
	[]byte("GET "), []byte("PUT "), []byte("POST"), []byte("HEAD"),
	[]byte("CONNECT "), []byte("OPTIONS "), []byte("DELETE "), []byte("PATCH "), []byte("TRACE "),
}

// looksLikeTLSRecord is Ex5's TLS fingerprint: the first three bytes match
// [\x16-\x17]\x03[\x00-\x09] (a handshake or application-data record header
// of SSL 3.0 / TLS 1.x), per section 4.1 of the paper. This includes the
// usual ClientHello prefix 0x16 0x03 0x00–0x04.
func looksLikeTLSRecord(p []byte) bool {
	return len(p) >= 3 && (p[0] == 0x16 || p[0] == 0x17) && p[1] == 0x03 && p[2] <= 0x09
}

// FETExempt applies the Great Firewall's fully-encrypted-traffic exemptions
// (Wu et al., USENIX Security 2023, Algorithm 1) to the first data packet of
// a connection. It returns true and the exemption that applies ("ex1" …
// "ex5", with detail), or false and a summary of the packet's measures when
// none applies, which is when the GFW would block the connection. An empty
// packet is exempt: the rule looks only at packets that carry data.
//
// The exemptions, checked in order:
//
//	Ex1: popcount(packet)/len(packet) <= 3.4 or >= 4.6
//	Ex2: the first 6 bytes are printable ASCII (0x20–0x7e)
//	Ex3: more than 50% of the bytes are printable ASCII
//	Ex4: more than 20 contiguous bytes are printable ASCII
//	Ex5: the packet starts like TLS ([\x16-\x17]\x03[\x00-\x09]) or HTTP
//	     ("GET ", "PUT ", "POST", "HEAD", …)
func FETExempt(first []byte) (bool, string) {
	n := len(first)
	if n == 0 {
		return true, "empty: no data"
	}
	ones, printable, run, longest := 0, 0, 0, 0
	for _, b := range first {
		ones += bits.OnesCount8(b)
		if isPrintable(b) {
			printable++
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	avg := float64(ones) / float64(n)
	// Ex1, in integers: ones/n <= 17/5  <=>  5*ones <= 17*n.
	if fetPopcountDen*ones <= fetPopcountLowNum*n || fetPopcountDen*ones >= fetPopcountHighNum*n {
		return true, fmt.Sprintf("ex1: %.2f set bits per byte (exempt if <= 3.4 or >= 4.6)", avg)
	}
	if n >= fetPrefixPrintable {
		all := true
		for _, b := range first[:fetPrefixPrintable] {
			if !isPrintable(b) {
				all = false
				break
			}
		}
		if all {
			return true, "ex2: first 6 bytes printable"
		}
	}
	if 2*printable > n {
		return true, fmt.Sprintf("ex3: %d of %d bytes printable (> 50%%)", printable, n)
	}
	if longest > fetMaxPrintableRun {
		return true, fmt.Sprintf("ex4: %d contiguous printable bytes (> 20)", longest)
	}
	if looksLikeTLSRecord(first) {
		return true, "ex5: TLS record prefix"
	}
	for _, p := range httpPrefixes {
		if bytes.HasPrefix(first, p) {
			return true, fmt.Sprintf("ex5: HTTP prefix %q", p)
		}
	}
	return false, fmt.Sprintf("not exempt: %.2f set bits per byte, %d of %d printable, longest printable run %d",
		avg, printable, n, longest)
}

// LooksLikeMagpieTCP is rule 3, the fingerprint of Magpie's plain tcp
// transport: link frames every Noise message as a 2-byte big-endian length
// and that many bytes, and the first message (Noise IK message 1) is at
// least 96 bytes (32 ephemeral + 48 encrypted static + 16 tag; link/doc.go).
// A client sends it alone and waits for the answer, so the first packet is
// exactly one frame. It matches when the first two bytes equal the length of
// the rest of first and that length is at least 96. Packets that start like
// a TLS record (0x14–0x17 0x03) are never matched, so a ClientHello that
// happens to have the right length is not mistaken for Magpie. Random data
// matches with probability 2^-16 per packet length.
func LooksLikeMagpieTCP(first []byte) bool {
	if len(first) < 2+linkMinFirstMessage {
		return false
	}
	if first[0] >= 0x14 && first[0] <= 0x17 && first[1] == 0x03 {
		return false
	}
	return int(binary.BigEndian.Uint16(first)) == len(first)-2
}

// linkMinFirstMessage is the size of a Noise IK message 1 with an empty
// payload (link/doc.go): e (32) + encrypted s (32+16) + empty payload tag (16).
const linkMinFirstMessage = 96
