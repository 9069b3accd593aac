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
}

// tlsOptions are the serve flags for the tls transport.
type tlsOptions struct {
	certFile, keyFile, sni, path string
	acmeDomain                   string // certificates from Let's Encrypt (ACME tls-alpn-01) for this name
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
		cfg := tlsws.ServerConfig{Secret: secret, Path: tlsOpts.path}
		tmpl := endpoints.Endpoint{Transport: tlsws.Name, Secret: secret[:], SNI: tlsOpts.sni, Path: tlsOpts.path}
		behind := scheme == tlsws.Name+"+proxy"
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
			cert, err := loadOrCreateCert(data, tlsOpts.certFile, tlsOpts.keyFile)
			if err != nil {
				return nil, err
			}
			cfg.Certificate = cert
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
		return &listener{Listener: ln, transport: tlsws.Name, template: tmpl, public: !behind}, nil
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

// loadOrCreateCert loads the operator's certificate, or a self-signed one
// kept in the data directory (created on first use).
func loadOrCreateCert(data, certFile, keyFile string) (*tls.Certificate, error) {
	if certFile == "" {
		certFile, keyFile = filepath.Join(data, "tls.crt"), filepath.Join(data, "tls.key")
		if _, err := os.Stat(certFile); errors.Is(err, fs.ErrNotExist) {
			if err := selfSigned(certFile, keyFile); err != nil {
				return nil, fmt.Errorf("creating a self-signed certificate: %w", err)
			}
		}
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls certificate: %w", err)
	}
	return &cert, nil
}

func selfSigned(certFile, keyFile string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return atomicfile.Write(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}
