package certs_test

import (
	"crypto/tls"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tlsguard/tlsguard/certs"
)

func TestStaticSNISelection(t *testing.T) {
	dir := t.TempDir()
	a := newTestCert(t, dir, "a", 24*time.Hour, "a.example.org")
	b := newTestCert(t, dir, "b", 24*time.Hour, "mail.example.org", "*.example.net")
	m := newManager(t, certs.Config{Certificates: []certs.Pair{a.pair(), b.pair()}},
		certs.Options{Hostname: "mail.example.org"})
	addr := serve(t, m)

	for _, tc := range []struct {
		sni  string
		want *testCert
	}{
		{"a.example.org", a},
		{"A.Example.Org", a},
		{"mail.example.org", b},
		{"x.example.net", b},   // wildcard
		{"", b},                // no SNI: the hostname's certificate
		{"unknown.test", b},    // unknown: the default
		{"a.b.example.net", b}, // wildcards match one label only; falls back to default anyway
	} {
		if got := servedSerial(t, addr, tc.sni); got.Cmp(tc.want.Leaf.SerialNumber) != 0 {
			t.Errorf("SNI %q: served serial %v, want %v", tc.sni, got, tc.want.Leaf.SerialNumber)
		}
	}

	exp := m.Expiry()
	if !exp["a.example.org"].Equal(a.Leaf.NotAfter) || !exp["*.example.net"].Equal(b.Leaf.NotAfter) {
		t.Errorf("Expiry = %v", exp)
	}
}

func TestStaticDefaultIsFirstWithoutHostnameMatch(t *testing.T) {
	dir := t.TempDir()
	a := newTestCert(t, dir, "a", 24*time.Hour, "a.example.org")
	b := newTestCert(t, dir, "b", 24*time.Hour, "b.example.org")
	m := newManager(t, certs.Config{Certificates: []certs.Pair{a.pair(), b.pair()}},
		certs.Options{Hostname: "other.example.org"})
	addr := serve(t, m)
	if got := servedSerial(t, addr, ""); got.Cmp(a.Leaf.SerialNumber) != 0 {
		t.Errorf("no SNI: served %v, want the first pair %v", got, a.Leaf.SerialNumber)
	}
}

func TestTLSPolicy(t *testing.T) {
	dir := t.TempDir()
	a := newTestCert(t, dir, "a", 24*time.Hour, "mail.example.org")
	m := newManager(t, certs.Config{Certificates: []certs.Pair{a.pair()}}, certs.Options{})
	addr := serve(t, m)

	cfg := m.ServerConfig()
	if cfg.MinVersion != tls.VersionTLS12 || cfg.SessionTicketsDisabled || cfg.GetCertificate == nil {
		t.Errorf("ServerConfig: MinVersion %x, tickets disabled %v", cfg.MinVersion, cfg.SessionTicketsDisabled)
	}
	if strings.Join(cfg.NextProtos, ",") != "smtp" {
		t.Errorf("NextProtos = %v, want [smtp]", cfg.NextProtos)
	}
	for _, id := range cfg.CipherSuites {
		name := tls.CipherSuiteName(id)
		if !strings.HasPrefix(name, "TLS_ECDHE_") || strings.Contains(name, "CBC") {
			t.Errorf("cipher suite %s offered", name)
		}
	}

	t.Run("no ALPN works", func(t *testing.T) {
		c, err := dial(t, addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		if p := c.ConnectionState().NegotiatedProtocol; p != "" {
			t.Errorf("negotiated %q", p)
		}
	})
	t.Run("ALPN smtp negotiated", func(t *testing.T) {
		c, err := dial(t, addr, &tls.Config{NextProtos: []string{"smtp"}})
		if err != nil {
			t.Fatal(err)
		}
		if p := c.ConnectionState().NegotiatedProtocol; p != "smtp" {
			t.Errorf("negotiated %q", p)
		}
	})
	t.Run("HTTPS client refused (ALPACA)", func(t *testing.T) {
		if _, err := dial(t, addr, &tls.Config{NextProtos: []string{"h2", "http/1.1"}}); err == nil {
			t.Fatal("handshake with ALPN http/1.1 succeeded")
		}
	})
	t.Run("TLS 1.1 refused", func(t *testing.T) {
		if _, err := dial(t, addr, &tls.Config{MaxVersion: tls.VersionTLS11}); err == nil {
			t.Fatal("TLS 1.1 handshake succeeded")
		}
	})
	t.Run("CBC only refused", func(t *testing.T) {
		_, err := dial(t, addr, &tls.Config{MaxVersion: tls.VersionTLS12,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA}})
		if err == nil {
			t.Fatal("CBC-only handshake succeeded")
		}
	})
	t.Run("TLS 1.2 AEAD works", func(t *testing.T) {
		c, err := dial(t, addr, &tls.Config{MaxVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatal(err)
		}
		if v := c.ConnectionState().Version; v != tls.VersionTLS12 {
			t.Errorf("version %x", v)
		}
	})
}

func TestMinVersion13(t *testing.T) {
	dir := t.TempDir()
	a := newTestCert(t, dir, "a", 24*time.Hour, "mail.example.org")
	m := newManager(t, certs.Config{MinVersion: "1.3", Certificates: []certs.Pair{a.pair()}}, certs.Options{})
	addr := serve(t, m)
	if _, err := dial(t, addr, &tls.Config{MaxVersion: tls.VersionTLS12}); err == nil {
		t.Fatal("TLS 1.2 accepted with min_version 1.3")
	}
	if _, err := dial(t, addr, nil); err != nil {
		t.Fatal(err)
	}
}

func TestStaticErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	a := newTestCert(t, dir, "a", 24*time.Hour, "mail.example.org")
	b := newTestCert(t, dir, "b", 24*time.Hour, "mail.example.org")
	old := newTestCert(t, dir, "old", -time.Hour, "mail.example.org")
	for _, tc := range []struct {
		name string
		pair certs.Pair
		want string
	}{
		{"missing cert", certs.Pair{Cert: dir + "/nope.crt", Key: a.KeyFile}, dir + "/nope.crt: "},
		{"missing key", certs.Pair{Cert: a.CertFile, Key: dir + "/nope.key"}, dir + "/nope.key: "},
		{"mismatch", certs.Pair{Cert: a.CertFile, Key: b.KeyFile}, a.CertFile + " (key " + b.KeyFile + "): "},
		{"expired", old.pair(), old.CertFile + ": certificate expired"},
		{"key as cert", certs.Pair{Cert: a.KeyFile, Key: a.KeyFile}, a.KeyFile},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := certs.New(t.Context(), certs.Config{Certificates: []certs.Pair{tc.pair}}, certs.Options{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestReload(t *testing.T) {
	dir := t.TempDir()
	a := newTestCert(t, dir, "a", 24*time.Hour, "mail.example.org")
	m := newManager(t, certs.Config{Certificates: []certs.Pair{a.pair()}}, certs.Options{Hostname: "mail.example.org"})
	addr := serve(t, m)

	open, err := dial(t, addr, nil) // a session that must survive reloads
	if err != nil {
		t.Fatal(err)
	}

	// A good new pair is served on new handshakes.
	b := newTestCert(t, t.TempDir(), "b", 48*time.Hour, "mail.example.org")
	b.write(t, a.CertFile, a.KeyFile)
	if err := m.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := servedSerial(t, addr, "mail.example.org"); got.Cmp(b.Leaf.SerialNumber) != 0 {
		t.Fatalf("after reload: serial %v, want %v", got, b.Leaf.SerialNumber)
	}
	if !m.Expiry()["mail.example.org"].Equal(b.Leaf.NotAfter) {
		t.Errorf("Expiry not updated: %v", m.Expiry())
	}

	// A bad pair (cert replaced, key not) is refused; b stays.
	c := newTestCert(t, t.TempDir(), "c", 48*time.Hour, "mail.example.org")
	if err := os.WriteFile(a.CertFile, c.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	err = m.Reload()
	if err == nil || !strings.Contains(err.Error(), a.CertFile) {
		t.Fatalf("Reload of mismatched pair: %v", err)
	}
	if got := servedSerial(t, addr, "mail.example.org"); got.Cmp(b.Leaf.SerialNumber) != 0 {
		t.Fatalf("after refused reload: serial %v, want the old %v", got, b.Leaf.SerialNumber)
	}

	// The open session is untouched.
	echo(t, open)
}

func TestWatchReloadsChangedFiles(t *testing.T) {
	dir := t.TempDir()
	a := newTestCert(t, dir, "a", 24*time.Hour, "mail.example.org")
	core, logs := observer.New(zap.InfoLevel)
	m := newManager(t, certs.Config{Certificates: []certs.Pair{a.pair()}, WatchInterval: 50 * time.Millisecond},
		certs.Options{Hostname: "mail.example.org", Logger: zap.New(core)})
	addr := serve(t, m)
	open, err := dial(t, addr, nil)
	if err != nil {
		t.Fatal(err)
	}

	// Replace by rename (as certbot and editors do): the watcher follows the path.
	b := newTestCert(t, dir, "b", 48*time.Hour, "mail.example.org")
	if err := os.Rename(b.KeyFile, a.KeyFile); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(b.CertFile, a.CertFile); err != nil {
		t.Fatal(err)
	}
	waitServed(t, addr, b)

	// A broken file is ignored; the watcher keeps b.
	if err := os.WriteFile(a.CertFile, []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if got := servedSerial(t, addr, ""); got.Cmp(b.Leaf.SerialNumber) != 0 {
		t.Fatalf("broken file replaced the served cert")
	}
	refused := logs.FilterLevelExact(zap.ErrorLevel).FilterMessageSnippet("certificate reload refused").All()
	if len(refused) != 1 || !strings.Contains(refused[0].ContextMap()["error"].(string), a.CertFile) {
		t.Errorf("want one error naming %s, got %v", a.CertFile, refused)
	}

	// Fixing it is picked up again.
	c := newTestCert(t, t.TempDir(), "c", 72*time.Hour, "mail.example.org")
	c.write(t, a.CertFile, a.KeyFile)
	waitServed(t, addr, c)
	echo(t, open)
}

func waitServed(t *testing.T, addr string, want *testCert) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := servedSerial(t, addr, "")
		if got.Cmp(want.Leaf.SerialNumber) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still serving %v, want %v", got, want.Leaf.SerialNumber)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// echo proves a connection opened earlier still carries data.
func echo(t *testing.T, c *tls.Conn) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatalf("open session broken: %v", err)
	}
	buf := make([]byte, 4)
	if _, err := c.Read(buf); err != nil || string(buf) != "ping" {
		t.Fatalf("open session broken: %q %v", buf, err)
	}
}

func TestResolvePaths(t *testing.T) {
	cfg := certs.Config{
		Certificates: []certs.Pair{{Cert: "c.pem", Key: "/abs/k.pem"}},
		ACME:         &certs.ACME{CARoot: "ca.pem", DNS: &certs.DNS{KeyFile: "tsig.key"}},
	}
	cfg.ResolvePaths("/etc/tlsguard")
	got := []string{cfg.Certificates[0].Cert, cfg.Certificates[0].Key, cfg.ACME.CARoot, cfg.ACME.DNS.KeyFile}
	want := []string{"/etc/tlsguard/c.pem", "/abs/k.pem", "/etc/tlsguard/ca.pem", "/etc/tlsguard/tsig.key"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("path %d = %q, want %q", i, got[i], want[i])
		}
	}
}

// Expiry's names are metric labels: a certificate's IP addresses are left
// out, and one for addresses only is under certs.IPOnly.
func TestExpiryHasNoAddresses(t *testing.T) {
	dir := t.TempDir()
	a := newTestCert(t, dir, "a", 24*time.Hour, "mail.example.org", "192.0.2.1")
	b := newTestCert(t, dir, "b", 48*time.Hour, "127.0.0.1", "::1")
	m := newManager(t, certs.Config{Certificates: []certs.Pair{a.pair(), b.pair()}}, certs.Options{Hostname: "mail.example.org"})
	exp := m.Expiry()
	if len(exp) != 2 || !exp["mail.example.org"].Equal(a.Leaf.NotAfter) || !exp[certs.IPOnly].Equal(b.Leaf.NotAfter) {
		t.Errorf("Expiry = %v, want mail.example.org and %s", exp, certs.IPOnly)
	}
}
