package e2e

// Helpers for the certificate tests (certs_*_test.go): a tlsguard started
// with a tls: section of the test's choosing, and TLS probes of its 465 and
// 587 roles. The shared startTLSGuard fixes the tls section to static files,
// so these tests write their own config; they need no backend, since they
// only look at handshakes.

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsguard/tlsguard/certs/pebbletest"
)

// certsGuard is a running `tlsguard serve` with an implicit TLS listener
// (the 465 role) and a STARTTLS one (the 587 role).
type certsGuard struct {
	Submissions string // tls: implicit
	Submission  string // tls: starttls
	Dir         string // config, policy, state, log
	ConfigFile  string
	LogFile     string

	cmd    *exec.Cmd
	exited chan struct{}
}

// certsHostname is the hostname and certificate name in these tests.
const certsHostname = "mail.example.test"

// certsStartGuard starts tlsguard in dir (a fresh temp dir when empty) with
// tlsYAML as the body of its tls: section (indented two spaces). A second
// call with the same dir reuses its state folder: a restart.
func certsStartGuard(t testing.TB, dir, tlsYAML string) *certsGuard {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	g := &certsGuard{
		Submissions: loopbackAddr(t),
		Submission:  loopbackAddr(t),
		Dir:         dir,
		ConfigFile:  filepath.Join(dir, "tlsguard.yaml"),
		LogFile:     filepath.Join(dir, fmt.Sprintf("tlsguard-%d.log", time.Now().UnixNano())),
	}
	g.writeConfig(t, tlsYAML)

	g.cmd, g.exited = runGuard(t, dir, g.ConfigFile, g.LogFile)
	t.Cleanup(func() {
		g.Stop(t)
		if t.Failed() {
			t.Logf("tlsguard config:\n%s\ntlsguard log:\n%s", readFile(g.ConfigFile), g.Log())
		}
	})
	if err := waitGreeting(g.Submission, g.exited, guardStartTimeout); err != nil {
		t.Fatalf("tlsguard: %v\nlog:\n%s", err, g.Log())
	}
	if err := waitListening(g.Submissions, g.exited, guardStartTimeout); err != nil {
		t.Fatalf("tlsguard: %v\nlog:\n%s", err, g.Log())
	}
	return g
}

// writeConfig writes tlsguard.yaml and a policy into g.Dir.
func (g *certsGuard) writeConfig(t testing.TB, tlsYAML string) {
	t.Helper()
	policyFile := filepath.Join(g.Dir, "policy.yaml")
	writeFile(t, policyFile, policyYAML([]string{"example.test"}, []string{"192.0.2.0/24"}))
	cfg := fmt.Sprintf(`hostname: %s
state_dir: %q
listeners:
  - name: submissions
    address: %q
    tls: implicit
  - name: submission
    address: %q
    tls: starttls
tls:
%s
backend:
  address: %q
  tls: none
  timeout: 5s
policy: %q
shutdown_grace: 2s
log:
  level: debug
  format: json
`, certsHostname, filepath.Join(g.Dir, "state"), g.Submissions, g.Submission,
		strings.TrimRight(tlsYAML, "\n"), loopbackAddr(t), policyFile)
	writeFile(t, g.ConfigFile, cfg)
}

// Stop sends SIGTERM and waits for the process to exit.
func (g *certsGuard) Stop(t testing.TB) {
	if terminate(g.cmd, g.exited, 20*time.Second) {
		t.Errorf("tlsguard did not exit within 20s of SIGTERM; killed")
	}
}

// SIGHUP asks tlsguard to reload.
func (g *certsGuard) SIGHUP(t testing.TB) {
	t.Helper()
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
}

// Log is what this run of tlsguard logged.
func (g *certsGuard) Log() string { return readFile(g.LogFile) }

// served465 handshakes with the implicit TLS listener and returns the
// certificate chain it serves (unverified: the test checks it).
func (g *certsGuard) served465(t testing.TB, sni string) []*x509.Certificate {
	t.Helper()
	c := dialImplicitTLS(t, g.Submissions, &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{"smtp"}})
	defer c.conn.Close()
	c.ehlo("client.example")
	return c.conn.(*tls.Conn).ConnectionState().PeerCertificates
}

// served587 connects to the STARTTLS listener, upgrades and returns the
// chain it serves.
func (g *certsGuard) served587(t testing.TB, sni string) []*x509.Certificate {
	t.Helper()
	c := dialSMTP(t, g.Submission)
	defer c.conn.Close()
	c.ehlo("client.example")
	st := c.startTLS(&tls.Config{ServerName: sni, InsecureSkipVerify: true})
	c.ehlo("client.example")
	return st.PeerCertificates
}

// waitServedSerial polls new 465 and 587 connections until both serve a
// leaf with serial want, or fails after timeout.
func (g *certsGuard) waitServedSerial(t testing.TB, want *big.Int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		a := g.served465(t, certsHostname)[0].SerialNumber
		b := g.served587(t, certsHostname)[0].SerialNumber
		if a.Cmp(want) == 0 && b.Cmp(want) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: 465 serves serial %v, 587 serves %v; want %v", timeout, a, b, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// certsStartPebble starts Pebble; like requireTool, a missing pebble fails
// the test under CI and skips it otherwise.
func certsStartPebble(t testing.TB, opts pebbletest.Options) *pebbletest.Pebble {
	t.Helper()
	if _, err := exec.LookPath("pebble"); err != nil && os.Getenv("CI") != "" {
		t.Fatalf("CI is set but pebble is not on PATH: go install github.com/letsencrypt/pebble/v2/cmd/pebble@%s", pebbletest.Version)
	}
	return pebbletest.Start(t, opts)
}

// certsInsecureTLS is a client config that accepts any certificate: these tests
// check the served certificate themselves.
func certsInsecureTLS() *tls.Config {
	return &tls.Config{ServerName: certsHostname, InsecureSkipVerify: true}
}
