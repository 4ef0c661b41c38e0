package certs_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"os"
	"path/filepath"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tlsguard/tlsguard/certs"
)

func TestSelfSigned(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	core, logs := observer.New(zap.InfoLevel)
	opts := certs.Options{Hostname: "mail.example.org", StateDir: state, Logger: zap.New(core)}
	m := newManager(t, certs.Config{SelfSigned: true}, opts)
	addr := serve(t, m)

	c, err := dial(t, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf := c.ConnectionState().PeerCertificates[0]
	for _, n := range []string{"mail.example.org", "localhost", "127.0.0.1", "::1"} {
		if err := leaf.VerifyHostname(n); err != nil {
			t.Errorf("self-signed cert: %v", err)
		}
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("key is %T, want ECDSA P-256", leaf.PublicKey)
	}

	dir := filepath.Join(state, "selfsigned")
	mode := func(p string) os.FileMode {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Mode().Perm()
	}
	if got := mode(dir); got != 0o700 {
		t.Errorf("%s mode %o, want 700", dir, got)
	}
	if got := mode(filepath.Join(dir, "key.pem")); got != 0o600 {
		t.Errorf("key mode %o, want 600", got)
	}

	// By DNS name only: the names are metric labels, never addresses.
	if exp := m.Expiry(); !exp["mail.example.org"].Equal(leaf.NotAfter) || !exp["localhost"].Equal(leaf.NotAfter) || len(exp) != 2 {
		t.Errorf("Expiry = %v", exp)
	}
	warns := logs.FilterLevelExact(zap.WarnLevel).FilterMessageSnippet("SELF-SIGNED").All()
	if len(warns) != 1 {
		t.Errorf("want one loud WARN about the self-signed certificate, got %v", logs.All())
	}

	// The next start reuses it.
	m.Close()
	m2 := newManager(t, certs.Config{SelfSigned: true}, opts)
	if got := servedSerial(t, serve(t, m2), ""); got.Cmp(leaf.SerialNumber) != 0 {
		t.Errorf("restart generated a new certificate (serial %v, was %v)", got, leaf.SerialNumber)
	}

	// A new hostname gets a new one.
	opts.Hostname = "other.example.org"
	m3 := newManager(t, certs.Config{SelfSigned: true}, opts)
	c3, err := dial(t, serve(t, m3), &tls.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if l := c3.ConnectionState().PeerCertificates[0]; bytes.Equal(l.Raw, leaf.Raw) || l.VerifyHostname("other.example.org") != nil {
		t.Errorf("hostname change did not give a new certificate for it")
	}
}

func TestSelfSignedNeedsStateDir(t *testing.T) {
	if _, err := certs.New(t.Context(), certs.Config{SelfSigned: true}, certs.Options{Hostname: "x.example"}); err == nil {
		t.Fatal("self-signed without a state dir succeeded")
	}
}
