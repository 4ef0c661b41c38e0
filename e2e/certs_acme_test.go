package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsguard/tlsguard/certs/pebbletest"
)

// certsACMEYAML is a tls: section that gets certsHostname from Pebble over
// HTTP-01, with the challenge listener on a free loopback port (Pebble runs
// with PEBBLE_VA_ALWAYS_VALID, so it does not really connect to it).
func certsACMEYAML(t testing.TB, p *pebbletest.Pebble, extra string) string {
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

// certsOrdersCompleted counts certmagic's log line for a completed order.
func certsOrdersCompleted(log string) int {
	return strings.Count(log, "certificate obtained successfully")
}

func TestCertsACMEServes465And587AndRestartReuses(t *testing.T) {
	p := certsStartPebble(t, pebbletest.Options{})
	dir := t.TempDir()
	// Pebble picks a random profile for an order without one: ask for 90 days.
	tlsYAML := certsACMEYAML(t, p, "    profile: "+pebbletest.DefaultProfile+"\n")

	start := time.Now()
	g := certsStartGuard(t, dir, tlsYAML)
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
	if n := certsOrdersCompleted(g.Log()); n != 1 {
		t.Errorf("first start completed %d orders, want 1", n)
	}
	g.Stop(t)

	// Restart on the same state folder: the stored certificate is served
	// and nothing is ordered.
	g2 := certsStartGuard(t, dir, tlsYAML)
	g2.waitServedSerial(t, serial, 0)
	if n := certsOrdersCompleted(g2.Log()); n != 0 {
		t.Errorf("restart completed %d orders, want 0 (the stored certificate is reused)", n)
	}
}

func TestCertsACMEShortLivedRenewedWithoutRestart(t *testing.T) {
	p := certsStartPebble(t, pebbletest.Options{ShortValidity: 10 * time.Second})
	g := certsStartGuard(t, "", certsACMEYAML(t, p, fmt.Sprintf("    profile: %s\n    renew_check_interval: 1s\n", pebbletest.ShortProfile)))

	// A session opened on the first certificate.
	open := dialSMTP(t, g.Submission)
	open.ehlo("client.example")
	open.startTLS(certsInsecureTLS())
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

// TestCertsACMEStartFailsFastWithoutCertificate: with no certificate in
// storage and a CA that refuses the name, tlsguard exits non-zero before
// listening, and says why.
func TestCertsACMEStartFailsFastWithoutCertificate(t *testing.T) {
	p := certsStartPebble(t, pebbletest.Options{})
	g := &certsGuard{Dir: t.TempDir(), Submissions: loopbackAddr(t), Submission: loopbackAddr(t)}
	g.ConfigFile = filepath.Join(g.Dir, "tlsguard.yaml")
	tlsYAML := strings.Replace(certsACMEYAML(t, p, ""), "names: ["+certsHostname+"]", "names: ["+pebbletest.BlockedName+"]", 1)
	g.writeConfig(t, tlsYAML)

	bin := tlsguardBinary(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, bin, "serve", "--config", g.ConfigFile).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() == 0 || ctx.Err() != nil {
		t.Fatalf("tlsguard did not exit with an error (err %v, after %v):\n%s", err, time.Since(start), out)
	}
	t.Logf("exited %d after %v", exit.ExitCode(), time.Since(start).Round(time.Millisecond))
	for _, want := range []string{"tls.acme", pebbletest.BlockedName, "rejectedIdentifier"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output does not mention %q:\n%s", want, out)
		}
	}
	if c, err := net.DialTimeout("tcp", g.Submission, time.Second); err == nil {
		c.Close()
		t.Errorf("something listens on %s after a failed start", g.Submission)
	}
}

// The EAB MAC key from a file (tls.acme.eab.mac_key_file, relative to the
// config's folder), against a CA that requires an External Account Binding
// (without one, Pebble answers externalAccountRequired).
func TestCertsACMEEABMACKeyFile(t *testing.T) {
	const kid, mac = "tlsguard-e2e", "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W"
	p := certsStartPebble(t, pebbletest.Options{EABKeys: map[string]string{kid: mac}})
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "eab.mac"), mac+"\n")
	tlsYAML := certsACMEYAML(t, p, "    profile: "+pebbletest.DefaultProfile+"\n    eab:\n      key_id: "+kid+"\n      mac_key_file: eab.mac\n")
	g := certsStartGuard(t, dir, tlsYAML)
	if err := p.Verify(t, g.served465(t, certsHostname), certsHostname); err != nil {
		t.Errorf("not a Pebble-issued certificate: %v", err)
	}
}
