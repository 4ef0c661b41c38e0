package certs_test

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/tlsguard/tlsguard/certs"
	"github.com/tlsguard/tlsguard/certs/pebbletest"
)

// TestACMERealValidation runs each challenge against a Pebble that really
// validates: it resolves the name through a test DNS server (to 127.0.0.1)
// and connects to tlsguard's challenge listener (http-01, tls-alpn-01) or
// reads the TXT record tlsguard wrote over RFC 2136 (dns-01). This proves
// http_port, tls_alpn_port, listen_host and the dns section are wired, not
// only that an order completes.
func TestACMERealValidation(t *testing.T) {
	secret := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	ns := startDNSServer(t, "example.test", "tlsguard-acme", secret)
	ns.setA(acmeName, "127.0.0.1")
	ports := pebbletest.FreePorts(t, 2)
	p := pebbletest.Start(t, pebbletest.Options{RealValidation: true, DNSServer: ns.addr, HTTPPort: ports[0], TLSPort: ports[1]})

	base := func() *certs.ACME {
		return &certs.ACME{
			CA: p.DirectoryURL, CARoot: p.CARootFile, Email: "postmaster@example.test", AgreeTOS: true,
			Profile: pebbletest.DefaultProfile, Names: []string{acmeName}, ListenHost: "127.0.0.1",
		}
	}
	for _, tc := range []struct {
		name string
		acme func() *certs.ACME
	}{
		{certs.ChallengeHTTP01, func() *certs.ACME {
			a := base()
			a.Challenge, a.HTTPPort = certs.ChallengeHTTP01, p.HTTPPort
			return a
		}},
		{certs.ChallengeTLSALPN01, func() *certs.ACME {
			a := base()
			a.Challenge, a.TLSALPNPort = certs.ChallengeTLSALPN01, p.TLSPort
			return a
		}},
		{certs.ChallengeDNS01, func() *certs.ACME {
			a := base()
			a.Challenge, a.ListenHost = certs.ChallengeDNS01, ""
			a.DNS = &certs.DNS{Provider: "rfc2136", Server: ns.addr, KeyName: "tlsguard-acme", Key: secret,
				Resolvers: []string{ns.addr}, PropagationTimeout: 20 * time.Second}
			return a
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := strings.Count(p.Output(), "authz") // Pebble logs each authorization it validates
			start := time.Now()
			m := newManager(t, certs.Config{ACME: tc.acme()}, certs.Options{Hostname: acmeName, StateDir: t.TempDir()})
			t.Logf("obtained with real %s validation in %v", tc.name, time.Since(start).Round(time.Millisecond))
			c, err := dial(t, serve(t, m), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := p.Verify(t, c.ConnectionState().PeerCertificates, acmeName); err != nil {
				t.Error(err)
			}
			if strings.Count(p.Output(), "authz") == before {
				t.Errorf("Pebble logged no authorization")
			}
		})
	}
	if strings.Contains(p.Output(), "ALWAYS_VALID") {
		t.Errorf("Pebble skipped validation:\n%s", p.Output())
	}
}
