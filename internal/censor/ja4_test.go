package censor

import (
	"crypto/tls"
	"os"
	"strings"
	"testing"
)

// The JA4 of a real Chromium 156 ClientHello (the tls transport's fixture)
// is the value FoxIO's tools give for Chrome 152+.
func TestJA4OfChromium(t *testing.T) {
	hello, err := os.ReadFile("../../transport/tlsws/testdata/chrome-156.clienthello")
	if err != nil {
		t.Fatal(err)
	}
	got, err := JA4(hello)
	if err != nil {
		t.Fatal(err)
	}
	if want := "t13d1517h2_8daaf6152771_cb7bf5808d99"; got != want {
		t.Fatalf("JA4 = %s, want %s", got, want)
	}
	// A truncated ClientHello has none.
	if _, err := JA4(hello[:len(hello)-1]); err == nil {
		t.Error("JA4 of a truncated ClientHello")
	}
	if _, err := JA4([]byte("GET / HTTP/1.1\r\n\r\n")); err == nil {
		t.Error("JA4 of HTTP")
	}
}

// Go's crypto/tls without SNI and ALPN: "i" and "00".
func TestJA4NoSNINoALPN(t *testing.T) {
	for _, tc := range []struct {
		cfg    *tls.Config
		prefix string
	}{
		{&tls.Config{InsecureSkipVerify: true}, "t13i"},
		{&tls.Config{ServerName: "example.org", NextProtos: []string{"http/1.1"}}, "t13d"},
	} {
		got, err := JA4(goClientHello(tc.cfg))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(got, tc.prefix) {
			t.Errorf("JA4 %s, want %s…", got, tc.prefix)
		}
		wantALPN := "00"
		if len(tc.cfg.NextProtos) > 0 {
			wantALPN = "h1"
		}
		if got[8:10] != wantALPN {
			t.Errorf("JA4 %s: ALPN part %q, want %q", got, got[8:10], wantALPN)
		}
	}
}
