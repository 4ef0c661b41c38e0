package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// certsPair is a generated certificate for certsHostname in PEM.
type certsPair struct {
	serial          *big.Int
	certPEM, keyPEM []byte
}

func certsNewPair(t testing.TB) certsPair {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: certsHostname},
		DNSNames:     []string{certsHostname},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	return certsPair{
		serial:  serial,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
	}
}

// install replaces the files the way an operator's tooling does: write
// beside, then rename over (key first, so the pair is never half old).
func (p certsPair) install(t testing.TB, certFile, keyFile string) {
	t.Helper()
	for _, f := range []struct {
		path string
		data []byte
	}{{keyFile, p.keyPEM}, {certFile, p.certPEM}} {
		tmp := f.path + ".new"
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, f.path); err != nil {
			t.Fatal(err)
		}
	}
}

func certsStaticYAML(certFile, keyFile, watch string) string {
	return fmt.Sprintf("  certificates:\n    - cert: %q\n      key: %q\n  watch_interval: %s\n", certFile, keyFile, watch)
}

// certsOpenSession is a 587 session after STARTTLS and EHLO, to prove a reload
// does not drop it.
func certsOpenSession(t testing.TB, g *certsGuard) *smtpConn {
	t.Helper()
	c := dialSMTP(t, g.Submission)
	c.ehlo("client.example")
	c.startTLS(certsInsecureTLS())
	c.ehlo("client.example")
	c.cmd("MAIL FROM:<a@example.net>").expect(t, 250)
	return c
}

func TestCertsStaticReloadOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	a := certsNewPair(t)
	a.install(t, certFile, keyFile)
	// A long watch interval, so only the signal can cause the reload.
	g := certsStartGuard(t, dir, certsStaticYAML(certFile, keyFile, "1h"))
	g.waitServedSerial(t, a.serial, 0)
	open := certsOpenSession(t, g)

	b := certsNewPair(t)
	b.install(t, certFile, keyFile)
	time.Sleep(300 * time.Millisecond)
	if got := g.served465(t, certsHostname)[0].SerialNumber; got.Cmp(a.serial) != 0 {
		t.Fatalf("new files served before SIGHUP (watch_interval 1h)")
	}
	g.SIGHUP(t)
	g.waitServedSerial(t, b.serial, 5*time.Second)

	// A bad pair (a new cert with the old key) is refused; b stays.
	c := certsNewPair(t)
	if err := os.WriteFile(certFile, c.certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	g.SIGHUP(t)
	// The refusal is logged as an error naming the file (the wording is
	// cmd's).
	refused := func() bool {
		for _, l := range strings.Split(g.Log(), "\n") {
			if strings.Contains(l, `"level":"error"`) && strings.Contains(l, "refused") && strings.Contains(l, certFile) {
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(5 * time.Second)
	for !refused() {
		if time.Now().After(deadline) {
			t.Fatalf("no error naming %s logged after SIGHUP with a mismatched pair", certFile)
		}
		time.Sleep(100 * time.Millisecond)
	}
	g.waitServedSerial(t, b.serial, 0)

	// The session opened before both reloads goes on.
	open.cmd("RSET").expect(t, 250)
	open.cmd("NOOP").expect(t, 250)
	open.cmd("QUIT").expect(t, 221)
}

func TestCertsStaticReloadOnFileChange(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	a := certsNewPair(t)
	a.install(t, certFile, keyFile)
	g := certsStartGuard(t, dir, certsStaticYAML(certFile, keyFile, "200ms"))
	g.waitServedSerial(t, a.serial, 0)
	open := certsOpenSession(t, g)

	// Replaced files, no signal: the watcher notices.
	b := certsNewPair(t)
	b.install(t, certFile, keyFile)
	g.waitServedSerial(t, b.serial, 5*time.Second)

	// Rewritten in place (same inode), no signal.
	c := certsNewPair(t)
	if err := os.WriteFile(keyFile, c.keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, c.certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	g.waitServedSerial(t, c.serial, 5*time.Second)

	open.cmd("NOOP").expect(t, 250)
	open.cmd("QUIT").expect(t, 221)
}
