package certs_test

import (
	"context"
	"crypto/tls"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tlsguard/tlsguard/certs"
	"github.com/tlsguard/tlsguard/certs/pebbletest"
)

const acmeName = "mail.example.test"

// acmeConfig is an ACME section against p, with the challenge listener on a
// free loopback port.
func acmeConfig(t *testing.T, p *pebbletest.Pebble, challenge string) certs.Config {
	a := &certs.ACME{
		CA:         p.DirectoryURL,
		CARoot:     p.CARootFile,
		Email:      "postmaster@example.test",
		AgreeTOS:   true,
		Names:      []string{acmeName},
		Challenge:  challenge,
		ListenHost: "127.0.0.1",
		Profile:    pebbletest.DefaultProfile, // Pebble picks a random one otherwise
	}
	port := pebbletest.FreePorts(t, 1)[0]
	switch challenge {
	case certs.ChallengeTLSALPN01:
		a.TLSALPNPort = port
	default:
		a.HTTPPort = port
	}
	return certs.Config{ACME: a}
}

// obtained counts certmagic's "certificate obtained" log lines: one per
// completed order.
func obtained(logs *observer.ObservedLogs) int {
	return logs.FilterMessageSnippet("certificate obtained successfully").Len()
}

func TestACMEPebble(t *testing.T) {
	p := pebbletest.Start(t, pebbletest.Options{ShortValidity: 10 * time.Second})

	t.Run("http-01 obtain, serve, restart reuses", func(t *testing.T) {
		state := t.TempDir()
		core, logs := observer.New(zap.InfoLevel)
		opts := certs.Options{Hostname: acmeName, StateDir: state, Logger: zap.New(core)}
		cfg := acmeConfig(t, p, certs.ChallengeHTTP01)

		start := time.Now()
		m, err := certs.New(t.Context(), cfg, opts)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		t.Logf("obtained in %v", time.Since(start).Round(time.Millisecond))
		if n := obtained(logs); n != 1 {
			t.Errorf("orders completed: %d, want 1", n)
		}
		if got := m.ServerConfig().NextProtos; !slices.Equal(got, []string{"smtp"}) {
			t.Errorf("NextProtos = %v, want [smtp] without acme-tls/1 for http-01", got)
		}
		addr := serve(t, m)
		for _, sni := range []string{acmeName, "", "alias.example.test"} {
			c, err := dial(t, addr, &tls.Config{ServerName: sni})
			if err != nil {
				t.Fatalf("dial SNI %q: %v", sni, err)
			}
			chain := c.ConnectionState().PeerCertificates
			if err := p.Verify(t, chain, acmeName); err != nil {
				t.Errorf("SNI %q: served certificate does not chain to Pebble's root for %s: %v", sni, acmeName, err)
			}
		}
		serial := servedSerial(t, addr, acmeName)
		exp := m.Expiry()
		if d := time.Until(exp[acmeName]); d < 80*24*time.Hour {
			t.Errorf("Expiry()[%s] in %v, want ~90 days; all: %v", acmeName, d, exp)
		}
		m.Close()

		// Restart: the stored certificate is used, nothing is ordered.
		m2, err := certs.New(t.Context(), cfg, opts)
		if err != nil {
			t.Fatalf("New after restart: %v", err)
		}
		defer m2.Close()
		if got := servedSerial(t, serve(t, m2), acmeName); got.Cmp(serial) != 0 {
			t.Errorf("restart served serial %v, want the stored %v", got, serial)
		}
		if n := obtained(logs); n != 1 {
			t.Errorf("orders completed after restart: %d, want still 1", n)
		}
	})

	t.Run("tls-alpn-01 obtain", func(t *testing.T) {
		cfg := acmeConfig(t, p, certs.ChallengeTLSALPN01)
		m := newManager(t, cfg, certs.Options{Hostname: acmeName, StateDir: t.TempDir()})
		if got := m.ServerConfig().NextProtos; !slices.Equal(got, []string{"smtp", "acme-tls/1"}) {
			t.Errorf("NextProtos = %v, want [smtp acme-tls/1] with tls-alpn-01", got)
		}
		c, err := dial(t, serve(t, m), &tls.Config{ServerName: acmeName, NextProtos: []string{"smtp"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Verify(t, c.ConnectionState().PeerCertificates, acmeName); err != nil {
			t.Error(err)
		}
	})

	t.Run("short-lived certificate renewed without restart", func(t *testing.T) {
		cfg := acmeConfig(t, p, certs.ChallengeHTTP01)
		cfg.ACME.Profile = pebbletest.ShortProfile
		cfg.ACME.RenewCheckInterval = time.Second
		m := newManager(t, cfg, certs.Options{Hostname: acmeName, StateDir: t.TempDir()})
		addr := serve(t, m)
		open, err := dial(t, addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		first := servedSerial(t, addr, acmeName)
		firstExp := m.Expiry()[acmeName]
		if d := time.Until(firstExp); d > 15*time.Second {
			t.Fatalf("profile %s gave a certificate valid for %v; want seconds", pebbletest.ShortProfile, d)
		}
		deadline := time.Now().Add(25 * time.Second)
		for servedSerial(t, addr, acmeName).Cmp(first) == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("certificate (expiring %v) not renewed within 25s", firstExp)
			}
			time.Sleep(200 * time.Millisecond)
		}
		c, err := dial(t, addr, &tls.Config{ServerName: acmeName})
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Verify(t, c.ConnectionState().PeerCertificates, acmeName); err != nil {
			t.Errorf("renewed certificate: %v", err)
		}
		if !m.Expiry()[acmeName].After(firstExp) {
			t.Errorf("Expiry not updated after renewal: %v (was %v)", m.Expiry()[acmeName], firstExp)
		}
		echo(t, open)
	})

	t.Run("start fails fast when the CA refuses", func(t *testing.T) {
		cfg := acmeConfig(t, p, certs.ChallengeHTTP01)
		cfg.ACME.Names = []string{pebbletest.BlockedName}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		start := time.Now()
		_, err := certs.New(ctx, cfg, certs.Options{Hostname: acmeName, StateDir: t.TempDir()})
		if err == nil {
			t.Fatal("New succeeded for a name the CA refuses")
		}
		t.Logf("failed in %v: %v", time.Since(start).Round(time.Millisecond), err)
		if !strings.Contains(err.Error(), pebbletest.BlockedName) {
			t.Errorf("error does not name the name: %v", err)
		}
	})
}

func TestACMEUnreachableCA(t *testing.T) {
	port := 0
	{
		// A port nobody listens on.
		ports := pebbletest.FreePorts(t, 1)
		port = ports[0]
	}
	cfg := certs.Config{ACME: &certs.ACME{
		CA: "https://127.0.0.1:" + itoa(port) + "/dir", AgreeTOS: true, Email: "postmaster@example.test",
		HTTPPort: pebbletest.FreePorts(t, 1)[0], ListenHost: "127.0.0.1",
	}}
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	start := time.Now()
	_, err := certs.New(ctx, cfg, certs.Options{Hostname: acmeName, StateDir: t.TempDir()})
	if err == nil {
		t.Fatal("New succeeded with no CA")
	}
	t.Logf("failed in %v: %v", time.Since(start).Round(time.Millisecond), err)
	if !strings.Contains(err.Error(), acmeName) || !strings.Contains(err.Error(), "tls.acme") {
		t.Errorf("error should name the section and the name: %v", err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
