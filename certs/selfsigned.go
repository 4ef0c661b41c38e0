package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

const (
	selfSignedDir      = "selfsigned"
	selfSignedCertFile = "cert.pem"
	selfSignedKeyFile  = "key.pem"
	// selfSignedLifetime is long enough for a trial, short enough that a
	// forgotten trial setup does not serve the same key forever.
	selfSignedLifetime = 90 * 24 * time.Hour
	// selfSignedMinLeft: an existing certificate with less validity left is
	// replaced at start.
	selfSignedMinLeft = 7 * 24 * time.Hour
)

// selfSignedNames are the names a self-signed certificate covers besides the
// hostname, so a first try on loopback works by any of them.
var selfSignedNames = []string{"localhost", "127.0.0.1", "::1"}

// loadOrCreateSelfSigned reuses StateDir/selfsigned/{cert,key}.pem when it
// is still valid for hostname, otherwise generates a new ECDSA P-256
// certificate and stores it (dir 0700, key 0600). created reports a new one.
func loadOrCreateSelfSigned(stateDir, hostname string, now time.Time) (c *tls.Certificate, created bool, err error) {
	if stateDir == "" {
		return nil, false, errors.New("self_signed: needs a state directory (state_dir) to keep the certificate in")
	}
	if hostname == "" {
		hostname = "localhost"
	}
	dir := filepath.Join(stateDir, selfSignedDir)
	certPath := filepath.Join(dir, selfSignedCertFile)
	keyPath := filepath.Join(dir, selfSignedKeyFile)

	if c, err := loadPair(Pair{Cert: certPath, Key: keyPath}, now); err == nil &&
		c.Leaf.VerifyHostname(hostname) == nil &&
		c.Leaf.NotAfter.Sub(now) > selfSignedMinLeft {
		return c, false, nil
	}

	certPEM, keyPEM, err := generateSelfSigned(hostname, now)
	if err != nil {
		return nil, false, fmt.Errorf("self-signed certificate for %s: %w", hostname, err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("%s: %w", dir, err)
	}
	// MkdirAll leaves an existing directory's mode alone: tighten it.
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("%s: %w", dir, err)
	}
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return nil, false, err
	}
	if err := writeFileAtomic(certPath, certPEM, 0o644); err != nil {
		return nil, false, err
	}
	c, err = parsePair(certPEM, keyPEM, certPath, keyPath, now)
	if err != nil {
		return nil, false, err
	}
	return c, true, nil
}

// generateSelfSigned makes an ECDSA P-256 certificate for hostname plus
// selfSignedNames and returns it and its key in PEM.
func generateSelfSigned(hostname string, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: hostname, Organization: []string{"tlsguard self-signed (for trying only)"}},
		NotBefore:             now.Add(-time.Hour), // tolerate clock skew
		NotAfter:              now.Add(selfSignedLifetime),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, n := range append([]string{hostname}, selfSignedNames...) {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if !contains(tmpl.DNSNames, n) {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	return certPEM, keyPEM, nil
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// writeFileAtomic writes data to a temporary file in the same folder and
// renames it over path, so a crash never leaves a half-written key.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
