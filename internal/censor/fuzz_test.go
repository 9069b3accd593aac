package censor

import (
	"bytes"
	"strings"
	"testing"
)

// FuzzParseClientHelloSNI: the ClientHello decoders (SNI and JA4) never
// panic, and once a buffer holds a whole ClientHello, more bytes after it
// change nothing.
func FuzzParseClientHelloSNI(f *testing.F) {
	ch := captureClientHello(f, "blocked.example")
	f.Add(ch)
	f.Add(splitRecords(ch, 7))
	f.Add(captureClientHello(f, ""))
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x04, 0x01, 0x00, 0x00, 0x00})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, buf []byte) {
		sni, done, err := parseClientHelloSNI(buf)
		if err != nil && done {
			t.Fatal("done with an error")
		}
		if done {
			sni2, done2, err2 := parseClientHelloSNI(append(bytes.Clone(buf), 0x16, 0x03, 0x01))
			if sni2 != sni || !done2 || err2 != nil {
				t.Fatalf("trailing bytes changed the result: %q %v %v", sni2, done2, err2)
			}
		}
		if ja4, jerr := JA4(buf); jerr == nil {
			// JA4 looks only at whether server_name is there, not into it.
			if !done && err == nil || len(ja4) != 36 || strings.Count(ja4, "_") != 2 || sni != "" && ja4[3] != 'd' {
				t.Fatalf("JA4 %q of a ClientHello with SNI %q (done %v)", ja4, sni, done)
			}
		}
	})
}

// FuzzFirstPacketRules: the FET exemptions and the Magpie fingerprint never
// panic, and a packet that starts like TLS is exempt and never Magpie.
func FuzzFirstPacketRules(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Add(filler(200))
	f.Add(append([]byte{0x00, 0x60}, make([]byte, 96)...))
	f.Fuzz(func(t *testing.T, p []byte) {
		exempt, why := FETExempt(p)
		if why == "" {
			t.Fatal("no reason given")
		}
		magpie := LooksLikeMagpieTCP(p)
		if looksLikeTLSRecord(p) && (!exempt || magpie) {
			t.Fatalf("TLS-looking packet: exempt %v, magpie %v", exempt, magpie)
		}
	})
}
