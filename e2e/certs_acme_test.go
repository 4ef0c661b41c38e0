package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tlsguard/tlsguard/certs/pebbletest"
)

// acmeTLSYAML is a tls: section that gets certsHostname from Pebble over
// HTTP-01, with the challenge listener on a free loopback port (Pebble runs
// with PEBBLE_VA_ALWAYS_VALID, so it does not really connect to it).
func acmeTLSYAML(t testing.TB, p *pebbletest.Pebble, extra string) string {
	return fmt.Sprintf(`  acme:
    ca: %q
    ca_root: %q
    email: postmaster@example.test
    agree_tos: true
    names: [%s]
    challenge: http-01
    http_port: %d
    listen_host: 127.0.0.1
%s`, p.DirectoryURL, p.CARootFile, certsHostname, freePort(t), extra)
}

// ordersCompleted counts certmagic's log line for a completed order.
func ordersCompleted(log string) int {
	return strings.Count(log, "certificate obtained successfully")
}

func TestCertsACMEServes465And587AndRestartReuses(t *testing.T) {
	p := startCertsPebble(t, pebbletest.Options{})
	dir := t.TempDir()
	// Pebble picks a random profile for an order without one: ask for 90 days.
	tlsYAML := acmeTLSYAML(t, p, "    profile: "+pebbletest.DefaultProfile+"\n")

	start := time.Now()
	g := startCertsGuard(t, dir, tlsYAML)
	t.Logf("tlsguard obtained its certificate and listened in %v", time.Since(start).Round(time.Millisecond))
	for name, chain := range map[string]func() string{
		"465 (implicit TLS)": func() string {
			c := g.served465(t, certsHostname)
			if err := p.Verify(t, c, certsHostname); err != nil {
				return err.Error()
			}
			return c[0].SerialNumber.String()
		},
		"587 (after STARTTLS)": func() string {
			c := g.served587(t, certsHostname)
			if err := p.Verify(t, c, certsHostname); err != nil {
				return err.Error()
			}
			return c[0].SerialNumber.String()
		},
		"465 without SNI": func() string {
			c := g.served465(t, "")
			if err := p.Verify(t, c, certsHostname); err != nil {
				return err.Error()
			}
			return c[0].SerialNumber.String()
		},
	} {
		if got := chain(); strings.Contains(got, " ") {
			t.Errorf("%s: not a Pebble-issued certificate for %s: %s", name, certsHostname, got)
		}
	}
	serial := g.served465(t, certsHostname)[0].SerialNumber
	if n := ordersCompleted(g.Log()); n != 1 {
		t.Errorf("first start completed %d orders, want 1", n)
	}
	g.Stop(t)

	// Restart on the same state folder: the stored certificate is served
	// and nothing is ordered.
	g2 := startCertsGuard(t, dir, tlsYAML)
	g2.waitServedSerial(t, serial, 0)
	if n := ordersCompleted(g2.Log()); n != 0 {
		t.Errorf("restart completed %d orders, want 0 (the stored certificate is reused)", n)
	}
}

func TestCertsACMEShortLivedRenewedWithoutRestart(t *testing.T) {
	p := startCertsPebble(t, pebbletest.Options{ShortValidity: 10 * time.Second})
	g := startCertsGuard(t, "", acmeTLSYAML(t, p, fmt.Sprintf("    profile: %s\n    renew_check_interval: 1s\n", pebbletest.ShortProfile)))

	// A session opened on the first certificate.
	open := dialSMTP(t, g.Submission)
	open.ehlo("client.example")
	open.startTLS(insecureTLS())
	open.ehlo("client.example")

	first := g.served587(t, certsHostname)[0]
	if life := first.NotAfter.Sub(first.NotBefore); life > 15*time.Second {
		t.Fatalf("Pebble profile %s issued a certificate for %v; want seconds", pebbletest.ShortProfile, life)
	}
	deadline := time.Now().Add(25 * time.Second)
	for {
		c465, c587 := g.served465(t, certsHostname), g.served587(t, certsHostname)
		if c465[0].SerialNumber.Cmp(first.SerialNumber) != 0 && c587[0].SerialNumber.Cmp(first.SerialNumber) != 0 {
			if err := p.Verify(t, c465, certsHostname); err != nil {
				t.Errorf("renewed certificate on 465: %v", err)
			}
			if err := p.Verify(t, c587, certsHostname); err != nil {
				t.Errorf("renewed certificate on 587: %v", err)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("certificate (expiring %v) not renewed within 25s, without restart", first.NotAfter)
		}
		time.Sleep(250 * time.Millisecond)
	}
	// The session from before the renewal still works.
	open.cmd("NOOP").expect(t, 250)
	open.cmd("QUIT").expect(t, 221)
}
