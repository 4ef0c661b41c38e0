package certs_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/tlsguard/tlsguard/certs"
)

// testCert is a generated certificate and its PEM files.
type testCert struct {
	Leaf     *x509.Certificate
	CertPEM  []byte
	KeyPEM   []byte
	CertFile string
	KeyFile  string
}

// newTestCert generates a self-signed ECDSA certificate for names (DNS names
// or IPs) valid from now-1h for life, and writes it to dir as base.crt and
// base.key.
func newTestCert(t *testing.T, dir, base string, life time.Duration, names ...string) *testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(life),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if life < 0 {
		tmpl.NotBefore = now.Add(2 * life)
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	tc := &testCert{
		Leaf:     leaf,
		CertPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		CertFile: filepath.Join(dir, base+".crt"),
		KeyFile:  filepath.Join(dir, base+".key"),
	}
	tc.write(t, tc.CertFile, tc.KeyFile)
	return tc
}

// write puts the PEM files at certFile and keyFile.
func (tc *testCert) write(t *testing.T, certFile, keyFile string) {
	t.Helper()
	if err := os.WriteFile(certFile, tc.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, tc.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
}

func (tc *testCert) pair() certs.Pair { return certs.Pair{Cert: tc.CertFile, Key: tc.KeyFile} }

// newManager builds a Manager and closes it at the end of the test.
func newManager(t *testing.T, cfg certs.Config, opts certs.Options) *certs.Manager {
	t.Helper()
	m, err := certs.New(context.Background(), cfg, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// serve runs a TLS server with m's config on a loopback port; every
// connection completes its handshake, then is held until the test ends.
func serve(t *testing.T, m *certs.Manager) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", m.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if err := c.(*tls.Conn).Handshake(); err != nil {
					return
				}
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					c.Write(buf[:n]) // echo, so a test can prove a session is alive
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// dial handshakes with addr using cfg (InsecureSkipVerify unless RootCAs is
// set) and returns the connection.
func dial(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	if cfg == nil {
		cfg = &tls.Config{}
	}
	if cfg.RootCAs == nil {
		cfg.InsecureSkipVerify = true
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c, nil
}

// servedSerial returns the serial of the leaf served to a client sending sni.
func servedSerial(t *testing.T, addr, sni string) *big.Int {
	t.Helper()
	c, err := dial(t, addr, &tls.Config{ServerName: sni})
	if err != nil {
		t.Fatalf("dial %s (SNI %q): %v", addr, sni, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].SerialNumber
}
