package servertest

import (
	"crypto/rand"
	"encoding/base64"
	"testing"

	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/transport/obfs"
	"github.com/magpie-im/magpie/transport/tlsws"
)

// TransportEndpoints makes s also listen with every transport (obfs with
// ocfg, and tls with a self-signed certificate for "magpie.example") and
// returns one endpoint per transport, keyed by its name; "tcp" is s.Addr.
func (s *Server) TransportEndpoints(tb testing.TB, ocfg obfs.Config) map[string]endpoints.Endpoint {
	tb.Helper()
	okey, err := obfs.GenerateServerKey()
	if err != nil {
		tb.Fatal(err)
	}
	oln, err := obfs.Listen("127.0.0.1:0", okey, ocfg)
	if err != nil {
		tb.Fatal(err)
	}
	go s.Serve(oln)
	var secret [32]byte
	rand.Read(secret[:])
	cert := SelfSignedCert(tb)
	tln, err := tlsws.Listen("127.0.0.1:0", tlsws.ServerConfig{Certificate: cert, Secret: secret})
	if err != nil {
		tb.Fatal(err)
	}
	go s.Serve(tln)
	return map[string]endpoints.Endpoint{
		"tcp":  {Transport: "tcp", Address: s.Addr},
		"obfs": {Transport: "obfs", Address: oln.Addr().String(), Cert: okey.Cert()},
		"tls": {Transport: "tls", Address: tln.Addr().String(), SNI: "magpie.example", Secret: secret[:],
			Cert: base64.RawURLEncoding.EncodeToString(tlsws.SPKIPin(cert.Leaf))},
	}
}
