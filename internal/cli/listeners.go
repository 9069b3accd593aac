package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/acme/autocert"

	"github.com/magpie-im/magpie/endpoints"
	"github.com/magpie-im/magpie/internal/atomicfile"
	"github.com/magpie-im/magpie/transport"
	"github.com/magpie-im/magpie/transport/obfs"
	"github.com/magpie-im/magpie/transport/tlsws"
)

// listener is one --listen: a transport and what clients need to use it.
type listener struct {
	net.Listener
	transport string
	template  endpoints.Endpoint // transport parameters; Address filled per advertised address
	public    bool               // false behind a proxy: the operator publishes the proxy's address
	note      string             // what the operator should know about it, for the banner
}

// tlsOptions are the serve flags for the tls transport.
type tlsOptions struct {
	certFile, keyFile, sni, path string
	acmeDomain                   string // certificates from Let's Encrypt (ACME tls-alpn-01) for this name
	fallback                     string // host:port of the real website unauthenticated connections are handed to
	decoyDir                     string // static site served without a fallback, instead of the generated one
}

// openListener opens one --listen value: [transport://]host:port, where transport
// is tcp (the default), obfs, tls, or tls+proxy (plain HTTP behind an HTTPS
// reverse proxy or CDN that terminates TLS).
func openListener(spec, data string, tlsOpts tlsOptions) (*listener, error) {
	scheme, addr, ok := strings.Cut(spec, "://")
	if !ok {
		scheme, addr = transport.TCP, spec
	}
	wrap := func(err error) error {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("listen on %s: %w (is another server running? choose another --listen)", spec, err)
		}
		return fmt.Errorf("listen on %s: %w (--listen takes [tcp|obfs|tls|tls+proxy://]host:port, e.g. 127.0.0.1:7443)", spec, err)
	}
	switch scheme {
	case transport.TCP:
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, wrap(err)
		}
		return &listener{Listener: ln, transport: transport.TCP, template: endpoints.Endpoint{Transport: transport.TCP}, public: true}, nil
	case transport.Obfs:
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, wrap(err)
		}
		key, err := obfs.LoadOrCreateServerKey(filepath.Join(data, "obfs.key"))
		if err != nil {
			return nil, err
		}
		ln, err := obfs.Listen(addr, key, obfs.Config{})
		if err != nil {
			return nil, wrap(err)
		}
		return &listener{Listener: ln, transport: transport.Obfs, template: endpoints.Endpoint{Transport: transport.Obfs, Cert: key.Cert()}, public: true}, nil
	case tlsws.Name, tlsws.Name + "+proxy":
		// Check the address before creating any file in the data directory.
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, wrap(err)
		}
		secret, err := loadOrCreateSecret(filepath.Join(data, "tls.secret"))
		if err != nil {
			return nil, err
		}
		behind := scheme == tlsws.Name+"+proxy"
		if behind && tlsOpts.fallback != "" {
			return nil, usageError{fmt.Errorf("--tls-fallback is for tls:// listeners; behind a proxy (%s), the proxy serves the website", spec)}
		}
		// The seed of this deployment's own website and cover name, so that
		// no two servers without a fallback look alike.
		seed, err := loadOrCreateSecret(filepath.Join(data, "tls.site"))
		if err != nil {
			return nil, err
		}
		cfg := tlsws.ServerConfig{Secret: secret, Path: tlsOpts.path, Fallback: tlsOpts.fallback, SiteSeed: &seed}
		if tlsOpts.decoyDir != "" {
			if st, err := os.Stat(tlsOpts.decoyDir); err != nil || !st.IsDir() {
				return nil, usageError{fmt.Errorf("--tls-decoy-dir %s: not a directory", tlsOpts.decoyDir)}
			}
			cfg.Decoy = tlsws.DecoyDir(tlsOpts.decoyDir)
		}
		tmpl := endpoints.Endpoint{Transport: tlsws.Name, Secret: secret[:], SNI: tlsOpts.sni, Path: tlsOpts.path}
		switch {
		case behind:
			cfg.BehindProxy = true
		case tlsOpts.acmeDomain != "":
			// A real certificate for the operator's domain: clients verify
			// it against the system roots and need no pin, and the site
			// looks like any other. It needs a public DNS name pointing here
			// and port 443 reachable for the tls-alpn-01 challenge.
			cfg.Autocert = &autocert.Manager{
				Prompt:     autocert.AcceptTOS,
				HostPolicy: autocert.HostWhitelist(tlsOpts.acmeDomain),
				Cache:      autocert.DirCache(filepath.Join(data, "acme")),
			}
			if tmpl.SNI == "" {
				tmpl.SNI = tlsOpts.acmeDomain
			}
		default:
			// Clients always send a server name (a ClientHello without one
			// is not a browser's): the operator's, else the certificate's,
			// else this deployment's generated cover name.
			if tmpl.SNI == "" && tlsOpts.certFile == "" {
				tmpl.SNI = tlsws.SiteHost(seed)
			}
			cert, err := loadOrCreateCert(data, tlsOpts.certFile, tlsOpts.keyFile, tmpl.SNI)
			if err != nil {
				return nil, err
			}
			cfg.Certificate = cert
			if tmpl.SNI == "" && len(cert.Leaf.DNSNames) > 0 {
				tmpl.SNI = cert.Leaf.DNSNames[0]
			}
			if tlsOpts.certFile == "" {
				// A self-signed certificate: clients pin it (the trade-off:
				// no CA involved, but the pin must travel in the invite).
				tmpl.Cert = base64.RawURLEncoding.EncodeToString(tlsws.SPKIPin(cert.Leaf))
			}
		}
		ln, err := tlsws.Listen(addr, cfg)
		if err != nil {
			return nil, wrap(err)
		}
		note := ""
		if !behind && tlsOpts.fallback == "" {
			note = " (no --tls-fallback: probes meet a generated site on Go's TLS, which can be told from nginx; see docs/TRANSPORTS.md)"
		}
		return &listener{Listener: ln, transport: tlsws.Name, template: tmpl, public: !behind, note: note}, nil
	default:
		return nil, fmt.Errorf("--listen %s: unknown transport %q (tcp, obfs, tls, tls+proxy)", spec, scheme)
	}
}

// loadOrCreateSecret keeps a 32-byte secret in path (mode 0600).
func loadOrCreateSecret(path string) ([32]byte, error) {
	var s [32]byte
	b, err := os.ReadFile(path)
	switch {
	case err == nil && len(b) == len(s):
		copy(s[:], b)
		return s, nil
	case err == nil:
		return s, fmt.Errorf("%s: %d bytes, want 32", path, len(b))
	case !errors.Is(err, fs.ErrNotExist):
		return s, err
	}
	if _, err := rand.Read(s[:]); err != nil {
		return s, err
	}
	got, _, err := atomicfile.Create(path, s[:], 0o600)
	if err != nil {
		return s, err
	}
	if len(got) != len(s) {
		return s, fmt.Errorf("%s: %d bytes, want 32", path, len(got))
	}
	return [32]byte(got), nil
}

// Self-signed certificates look like a CA's short-lived ones: 90 days,
// renewed (same key, so the pin stays) once fewer than 30 are left.
const (
	selfSignedLife  = 90 * 24 * time.Hour
	selfSignedRenew = 30 * 24 * time.Hour
)

// loadOrCreateCert loads the operator's certificate, or a self-signed one
// for name kept in the data directory: created on first use, and signed
// again with the same key when it nears its end or names another host.
func loadOrCreateCert(data, certFile, keyFile, name string) (*tls.Certificate, error) {
	if certFile == "" {
		certFile, keyFile = filepath.Join(data, "tls.crt"), filepath.Join(data, "tls.key")
		if err := ensureSelfSigned(certFile, keyFile, name, time.Now()); err != nil {
			return nil, fmt.Errorf("self-signed certificate: %w", err)
		}
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls certificate: %w", err)
	}
	return &cert, nil
}

// ensureSelfSigned makes sure certFile holds a self-signed certificate for
// name valid well past now, keeping the key in keyFile if there is one.
func ensureSelfSigned(certFile, keyFile, name string, now time.Time) error {
	var key *ecdsa.PrivateKey
	if cert, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil {
		leaf := cert.Leaf
		if leaf.VerifyHostname(name) == nil && now.Add(selfSignedRenew).Before(leaf.NotAfter) {
			return nil
		}
		k, ok := cert.PrivateKey.(*ecdsa.PrivateKey)
		if !ok {
			return fmt.Errorf("%s: not an ECDSA key", keyFile)
		}
		key = k
	} else if _, serr := os.Stat(certFile); !errors.Is(serr, fs.ErrNotExist) {
		return err
	}
	if key == nil {
		var err error
		if key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return err
		}
		kder, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		if err := atomicfile.Write(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
			return err
		}
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	// Issued at a random moment of the last day, as a CA's are at whatever
	// time the request came.
	jitter, _ := rand.Int(rand.Reader, big.NewInt(int64(24*time.Hour/time.Second)))
	notBefore := now.Add(-time.Duration(jitter.Int64()) * time.Second).Truncate(time.Second)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    notBefore,
		NotAfter:     notBefore.Add(selfSignedLife),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{name},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	return atomicfile.Write(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}
