package tlsws

import (
	_ "embed"
	"fmt"

	utls "github.com/refraction-networking/utls"
)

// The ClientHello the client sends is built from a real one: Chromium's,
// captured from headless chromium connecting to a local listener and kept
// in testdata/ with its JA4, version and date (docs/TRANSPORTS.md says how
// to refresh it). uTLS's own Chrome presets lag the browser (v1.8.2's
// newest is Chrome 133, JA4 t13d1516h2_…_d8a2da3f94cd); a spec parsed from
// the capture has today's cipher suites, extensions, groups, key shares
// (X25519MLKEM768 first), signature algorithms (ML-DSA included),
// certificate compression, ALPS codepoint and GREASE ECH.
//
// The files live in testdata/ because they are the test fixture too; the
// package embeds them, so they are part of the build.
//
//go:embed testdata/chrome-156.clienthello
var chromeHello []byte

// chromeSpec returns a fresh ClientHelloSpec of the captured Chrome (specs
// hold per-connection state, so each connection needs its own). Chrome
// permutes its extensions on every connection (since Chrome 110), and so
// does this, keeping GREASE and padding where Chrome keeps them.
func chromeSpec() (*utls.ClientHelloSpec, error) {
	// Blunt mimicry: extensions uTLS does not know (Chrome's trust_anchors,
	// 0xca34, draft-ietf-tls-trust-anchor-ids) are sent as captured.
	f := utls.Fingerprinter{AllowBluntMimicry: true}
	spec, err := f.FingerprintClientHello(chromeHello)
	if err != nil {
		return nil, fmt.Errorf("tlsws: the embedded Chrome ClientHello: %w", err)
	}
	spec.Extensions = utls.ShuffleChromeTLSExtensions(spec.Extensions)
	return spec, nil
}
