package client_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/magpie-im/magpie/blobstore"
	"github.com/magpie-im/magpie/client"
	"github.com/magpie-im/magpie/e2e/curve"
	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/internal/censor"
	"github.com/magpie-im/magpie/internal/servertest"
	"github.com/magpie-im/magpie/invite"
	"github.com/magpie-im/magpie/link"
	"github.com/magpie-im/magpie/server"
	"github.com/magpie-im/magpie/transport/obfs"
	"github.com/magpie-im/magpie/transport/tlsws"
)

func selfSignedCert(t testing.TB) *tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "magpie.example"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), DNSNames: []string{"magpie.example"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// TestConversationCarriesOnUnderCensorship runs one server on tcp, obfs and
// tls, each reachable only through a censor (internal/censor), and checks
// that under each rule, and under all at once, messages keep flowing both
// ways within the failover time. It also shows the plain tcp transport
// caught by the fingerprint rule (so the test can fail), and probes every
// listener actively.
func TestConversationCarriesOnUnderCensorship(t *testing.T) {
	pub := &publishing{}
	probeWindow := link.Config{HandshakeTimeoutMin: 2 * time.Second, HandshakeTimeoutMax: 3 * time.Second}
	blobs, err := blobstore.Open(filepath.Join(t.TempDir(), "blobs"), blobstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { blobs.Close() })
	s := servertest.Start(t, server.Config{Endpoints: pub.current, Link: probeWindow, Blobs: blobs})
	pub.key = curve.PrivateKey(s.Key.Private)

	okey, err := obfs.GenerateServerKey()
	if err != nil {
		t.Fatal(err)
	}
	oln, err := obfs.Listen("127.0.0.1:0", okey, obfs.Config{ProbeMin: 2 * time.Second, ProbeMax: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(oln)
	var secret [32]byte
	rand.Read(secret[:])
	cert := selfSignedCert(t)
	tln, err := tlsws.Listen("127.0.0.1:0", tlsws.ServerConfig{Certificate: cert, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(tln)

	cen := censor.New(censor.Config{BlackholeFor: time.Hour})
	t.Cleanup(func() { cen.Close() })
	forward := func(upstream string) string {
		a, err := cen.Forward("", upstream)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	tcpF, obfsF, tlsF := forward(s.Addr), forward(oln.Addr().String()), forward(tln.Addr().String())
	pub.set(t,
		endpoints.Endpoint{Transport: "tcp", Address: tcpF, Priority: 0},
		endpoints.Endpoint{Transport: "obfs", Address: obfsF, Cert: okey.Cert(), Priority: 1},
		endpoints.Endpoint{Transport: "tls", Address: tlsF, SNI: "magpie.example", Secret: secret[:],
			Cert: base64.RawURLEncoding.EncodeToString(tlsws.SPKIPin(cert.Leaf)), Priority: 2},
	)
	// The clients know only the censored forwards.
	inv := invite.Invite{ServerKey: s.Invite.ServerKey, Endpoints: mustMarshal(t, pub.current())}
	alice := newClient(t, inv, client.Options{})
	register(t, alice, "alice")
	bob := newClient(t, inv, client.Options{})
	register(t, bob, "bob")

	// An attachment goes through too: 5 MB, or 100 KB where the censor
	// throttles to 20 KB/s (5 MB would take four minutes there).
	sendAttachment := func(rule string, size int) {
		t.Helper()
		data := randomBytes(size)
		start := time.Now()
		if _, err := alice.SendFile(testCtx(t), "bob", writeFile(t, "a.bin", data), rule, nil); err != nil {
			t.Fatalf("%s: attachment: %v", rule, err)
		}
		_, path := receiveAttachment(t, bob)
		if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
			t.Fatalf("%s: the attachment differs", rule)
		}
		t.Logf("%-24s %d KB attachment both ways in %v", rule, size>>10, time.Since(start).Round(10*time.Millisecond))
	}
	exchange := func(rule string) {
		t.Helper()
		for i, pair := range [][2]*client.Client{{alice, bob}, {bob, alice}} {
			text := fmt.Sprintf("%s #%d", rule, i)
			start := time.Now()
			if _, err := pair[0].SendText(testCtx(t), map[int]string{0: "bob", 1: "alice"}[i], text); err != nil {
				t.Fatalf("%s: send: %v", rule, err)
			}
			evs, err := collect(t, pair[1])
			if err != nil {
				t.Fatalf("%s: receive: %v", rule, err)
			}
			got := texts(evs)
			if len(got) != 1 || !strings.HasSuffix(got[0], text) {
				t.Fatalf("%s: received %v", rule, got)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Fatalf("%s: a message took %v, want within the 5 s failover time", rule, d)
			}
		}
	}
	exchange("no censorship")

	rules := []struct {
		name string
		cfg  censor.Config
	}{
		{"block tcp address", censor.Config{BlockAddrs: []string{tcpF}, BlockAction: censor.ActionReset}},
		{"fully encrypted traffic", censor.Config{FET: true, BlackholeFor: time.Hour}},
		{"tcp fingerprint", censor.Config{TCPFingerprint: true}},
		{"SNI", censor.Config{BlockSNI: []string{"magpie.example"}}},
		{"throttle 20 KB/s", censor.Config{ThrottleBytesPerSec: 20 << 10}},
		{"all at once", censor.Config{BlockAddrs: []string{tcpF}, FET: true, BlackholeFor: time.Hour, TCPFingerprint: true,
			BlockSNI: []string{"magpie.example"}, ThrottleBytesPerSec: 20 << 10}},
	}
	for _, r := range rules {
		cen.SetConfig(r.cfg)
		cen.ClearBlackholes()
		// As fresh clients: try endpoints in priority order, tcp first, so
		// that each rule meets every transport.
		for _, c := range []*client.Client{alice, bob} {
			if err := client.ForgetEndpointsForTest(testCtx(t), c); err != nil {
				t.Fatal(err)
			}
		}
		exchange(r.name)
		if r.cfg.ThrottleBytesPerSec > 0 {
			sendAttachment(r.name, 100<<10)
		} else {
			sendAttachment(r.name, 5<<20)
		}
		stats := cen.Stats()
		t.Logf("%-24s flows %d, forwarded %d, reset %d, black-holed %d", r.name, stats.Flows, stats.Forwarded, stats.Reset, stats.Blackholed)
	}

	// The plain tcp transport was caught by the fingerprint rule (and by
	// FET), while obfs was never flagged as fully encrypted traffic.
	var fingerprinted, obfsFlagged int
	for _, ev := range cen.Events() {
		if ev.Rule == censor.RuleTCPFingerprint && ev.Listen == tcpF {
			fingerprinted++
		}
		if ev.Rule == censor.RuleFET && ev.Listen == obfsF {
			obfsFlagged++
		}
	}
	if fingerprinted == 0 {
		t.Fatal("the tcp fingerprint rule never caught the plain tcp transport")
	}
	if obfsFlagged != 0 {
		t.Fatalf("obfs flagged as fully encrypted traffic %d times", obfsFlagged)
	}

	// Active probing of every listener: replays of recorded first packets
	// (identical and altered) and random bytes get the same reaction as
	// silence. (The prober waits less than the servers' handshake windows,
	// so it compares bytes received and early closes.)
	prober := censor.Prober{Timeout: 1500 * time.Millisecond}
	for name, target := range map[string]struct{ addr, fwd string }{
		"tcp":  {s.Addr, tcpF},
		"obfs": {oln.Addr().String(), obfsF},
	} {
		rep := prober.Probe(context.Background(), target.addr, cen.FirstPacketsTo(target.fwd))
		if len(rep.Results) == 0 {
			t.Fatalf("%s: nothing probed", name)
		}
		if rep.Distinguishable {
			t.Errorf("%s listener reacts differently from a silent server: %v", name, rep.Reasons)
		}
	}
}
