package e2e

// Config keys of the README's reference table that had no end-to-end test
// of their own: backend.tls (starttls, implicit) with its tls_server_name,
// tls_ca_file and tls_skip_verify; auth.backend; tls.min_version "1.3";
// limits.write_timeout; limits.auth_fail_window for failures below the
// limit (a lockout that expires is TestHardeningAuthLockoutExpires);
// log.format console; and dsn: none. Each test changes the one key it
// names in the config startTLSGuard would write, and shows its effect on
// real software.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// configKeyGuard starts tlsguard in front of backendAddr with the config
// startTLSGuard writes, after replacing whole lines of it (pairs: old line,
// new lines) and appending extraYAML. A line that is not there fails the
// test, so that a change of the generated config cannot make an edit
// silently do nothing.
func configKeyGuard(t *testing.T, backendAddr, extraYAML string, replace ...string) *TLSGuard {
	t.Helper()
	if len(replace)%2 != 0 {
		t.Fatal("configKeyGuard: replacements come in pairs")
	}
	var missing []string
	edit := func(cfg string) string {
		for i := 0; i < len(replace); i += 2 {
			re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(replace[i]) + `$`)
			if !re.MatchString(cfg) {
				missing = append(missing, replace[i])
				continue
			}
			cfg = re.ReplaceAllLiteralString(cfg, replace[i+1])
		}
		return cfg
	}
	g := startGuardEdited(t, backendAddr, edit, extraYAML)
	if len(missing) > 0 {
		t.Fatalf("the generated config has no line %q:\n%s", missing, readFile(g.ConfigFile))
	}
	return g
}

// usersFileLine matches the auth.users_file line startTLSGuard writes.
var usersFileLine = regexp.MustCompile(`(?m)^  users_file: .*$`)

// configKeyBackendName is the name in the TLS backend's certificate.
const configKeyBackendName = "backend.example.net"

// startTLSPostfix starts the legacy backend with TLS: STARTTLS offered on
// its usual port (smtpd_tls_security_level = may) and, on a second port,
// TLS from the first byte (smtpd_tls_wrappermode = yes), both with a
// certificate for backend.example.net from pki. Postfix logs each TLS
// session and notes it in its Received header.
func startTLSPostfix(t *testing.T, pki *auditPKI) (pf *Postfix, wrapperAddr string) {
	t.Helper()
	// All main.cf settings in one go.
	pf = startPostfix(t,
		"smtpd_tls_security_level = may",
		"smtpd_tls_chain_files = "+pki.KeyFile+", "+pki.CertFile,
		"smtpd_tls_loglevel = 1",
		"smtpd_tls_received_header = yes",
	)
	// master.cf is not templated by the harness: add tlsmgr(8), without
	// which smtpd has no entropy and disables TLS, and the wrapper-mode
	// port, a second smtpd service; then restart, so that no smtpd started
	// without them is left.
	wrapperAddr = loopbackAddr(t)
	f, err := os.OpenFile(filepath.Join(pf.confDir(), "master.cf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = fmt.Fprintf(f, "tlsmgr unix - - n 1000? 1 tlsmgr\n"+
		"%s inet n - n - - smtpd -o smtpd_tls_wrappermode=yes -o smtpd_tls_security_level=encrypt\n", wrapperAddr)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	pf.Stop(t)
	pf.Restart(t)
	cfg := &tls.Config{RootCAs: loadPool(t, pki.CAFile), ServerName: configKeyBackendName}
	deadline := time.Now().Add(postfixStartTimeout)
	for {
		err := tlsGreeting(wrapperAddr, cfg)
		if err == nil {
			return pf, wrapperAddr
		}
		if time.Now().After(deadline) {
			t.Fatalf("postfix wrapper-mode port %s: %v\n%s", wrapperAddr, err, pf.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tlsGreeting connects with TLS from the first byte and expects a 220.
func tlsGreeting(addr string, cfg *tls.Config) error {
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "220") {
		return fmt.Errorf("greeting %q", line)
	}
	c.Write([]byte("QUIT\r\n"))
	return nil
}

func loadPool(t testing.TB, caFile string) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(readFile(caFile))) {
		t.Fatalf("%s: no certificate", caFile)
	}
	return pool
}

// backendReceived returns the Received header the backend (Postfix) added.
func backendReceived(t testing.TB, m Message) string {
	t.Helper()
	for _, r := range m.Received() {
		if strings.Contains(r, "by "+configKeyBackendName+" (Postfix)") {
			return r
		}
	}
	t.Fatalf("no Received header by the backend in:\n%s", m.Raw)
	return ""
}

// backend.tls: starttls and implicit, with backend.tls_server_name,
// tls_ca_file and tls_skip_verify. A message goes through a Postfix that
// offers STARTTLS, and through one in wrapper mode, and Postfix itself
// records that the leg from tlsguard was TLS ("with ESMTPS" in its
// Received header, "TLS connection established" in its log). A backend
// certificate that tls_ca_file did not sign, or that names another host
// than tls_server_name, makes tlsguard refuse to forward (4xx to the
// client, nothing stored), on both modes, unless tls_skip_verify; so does a
// backend that does not offer STARTTLS (no silent fallback to plaintext).
// REQUIRETLS is not advertised over a TLS leg whose backend (Postfix 3.7)
// does not offer it.
func TestConfigKeyBackendTLS(t *testing.T) {
	t.Parallel()
	pki := auditNewPKI(t, t.TempDir(), configKeyBackendName)
	rogue := auditNewPKI(t, t.TempDir(), configKeyBackendName) // same name, another CA
	pf, wrapper := startTLSPostfix(t, pki)
	plain := startPostfix(t) // offers no STARTTLS

	type tc struct {
		name, mode, addr string
		ca, serverName   string
		skipVerify       bool
		rcpt             string // where the message lands; "" = must be refused
		why              string // in tlsguard's log when refused
	}
	cases := []tc{
		{name: "starttls", mode: "starttls", addr: pf.Addr, ca: pki.CAFile, serverName: configKeyBackendName, rcpt: alice},
		{name: "implicit", mode: "implicit", addr: wrapper, ca: pki.CAFile, serverName: configKeyBackendName, rcpt: bob},
		{name: "starttls-skip-verify", mode: "starttls", addr: pf.Addr, ca: rogue.CAFile, serverName: "other.example.net", skipVerify: true, rcpt: "postmaster@example.org"},
		{name: "starttls-unknown-ca", mode: "starttls", addr: pf.Addr, ca: rogue.CAFile, serverName: configKeyBackendName, why: "certificate signed by unknown authority"},
		{name: "starttls-wrong-name", mode: "starttls", addr: pf.Addr, ca: pki.CAFile, serverName: "other.example.net", why: "not other.example.net"},
		{name: "implicit-unknown-ca", mode: "implicit", addr: wrapper, ca: rogue.CAFile, serverName: configKeyBackendName, why: "certificate signed by unknown authority"},
		{name: "implicit-wrong-name", mode: "implicit", addr: wrapper, ca: pki.CAFile, serverName: "other.example.net", why: "not other.example.net"},
		{name: "starttls-not-offered", mode: "starttls", addr: plain.Addr, ca: pki.CAFile, serverName: configKeyBackendName, why: "STARTTLS: not offered"},
	}
	t.Run("group", func(t *testing.T) {
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				backendYAML := fmt.Sprintf("  tls: %s\n  tls_server_name: %q\n  tls_ca_file: %q\n  tls_skip_verify: %v",
					c.mode, c.serverName, c.ca, c.skipVerify)
				g := configKeyGuard(t, c.addr, "", "  tls: none", backendYAML)

				s := dialSMTP(t, g.MX)
				s.ehlo("client.example.net")
				s.startTLS(g.PKI.clientTLS())
				ehlo := s.ehlo("client.example.net")
				to := c.rcpt
				if to == "" {
					to = victim
				}
				r := tryTransaction(t, s, carol, to, "Subject: backend tls "+c.name+"\r\n\r\nbody\r\n")
				if c.rcpt == "" {
					expectBackendTempfail(t, r)
					expectLogLine(t, g, "backend unreachable", c.why)
					return
				}
				r.expect(t, 250)
				if line, ok := ehlo.extension("REQUIRETLS"); ok {
					t.Errorf("REQUIRETLS advertised (%q) though the backend does not offer it", line)
				}
				s.cmd("MAIL FROM:<"+carol+"> REQUIRETLS").expectClass(t, 5)
				s.cmd("QUIT").expect(t, 221)

				m := pf.WaitMessages(t, c.rcpt, 1)[0]
				if rcv := backendReceived(t, m); !strings.Contains(rcv, " with ESMTPS id ") || !strings.Contains(rcv, "(using TLSv1.") {
					t.Errorf("the backend's Received header does not record a TLS session from tlsguard: %q", rcv)
				}
				if id := queueIDOf(r); id != m.QueueID() {
					t.Errorf("end of DATA said %q, the stored message has queue id %q", r.raw, m.QueueID())
				}
				if !strings.Contains(pf.Log(), "TLS connection established from") {
					t.Errorf("postfix logged no TLS connection:\n%s", pf.Log())
				}
			})
		}
	})
	pf.Settle(t)
	plain.Settle(t)
	pf.ExpectEmpty(t, victim)
	plain.ExpectEmpty(t, victim)
}

// auth.backend: true. Logins are checked by AUTH against the backend (a
// Postfix with Dovecot SASL, whose only user is alice): the right password
// relays; bob, whom only the htpasswd file startTLSGuard writes knows (the
// config no longer names it), is refused; a wrong password gets 535 5.7.8,
// reaches the backend (Postfix logs the failed SASL login) and counts
// towards auth_max_failures (then 421 4.7.0, even with the right password);
// with the backend down a login gets 454 4.7.0 (temporary: the client keeps
// its password and retries), not a 535. No password, nor an AUTH payload,
// is ever in tlsguard's (debug) log.
func TestConfigKeyAuthBackend(t *testing.T) {
	t.Parallel()
	dv := auditStartDovecot(t, auditNewPKI(t, t.TempDir(), "mail.audit.test", auditDovecotHost), auditDovecotOptions{Plaintext: true})
	pf := startPostfix(t, "smtpd_sasl_auth_enable = yes", "smtpd_sasl_type = dovecot", "smtpd_sasl_path = "+dv.AuthSocket)
	g := startGuardEdited(t, pf.Addr, func(cfg string) string {
		if !usersFileLine.MatchString(cfg) {
			t.Fatalf("the generated config has no users_file line:\n%s", cfg)
		}
		return usersFileLine.ReplaceAllLiteralString(cfg, "  backend: true")
	}, "limits:\n  auth_fail_delay: 100ms\n  auth_max_failures: 2\n")
	if strings.Contains(readFile(g.ConfigFile), "users_file") {
		t.Fatalf("the config still names a users file:\n%s", readFile(g.ConfigFile))
	}
	cfg := g.PKI.clientTLS()

	// The right password relays.
	c := dialImplicitTLSFrom(t, "127.0.9.1", g.Submissions, cfg)
	if line, _ := c.ehlo("client.example.net").extension("AUTH"); !strings.Contains(line, "PLAIN") {
		t.Fatalf("AUTH PLAIN not offered with auth.backend: %q", line)
	}
	c.authPlain("", aliceUser, alicePass).expect(t, 235)
	tryTransaction(t, c, alice, carol, "Subject: auth.backend\r\n\r\nbody\r\n").expect(t, 250)
	c.cmd("QUIT").expect(t, 221)
	pf.WaitMessages(t, carol, 1)
	expectLogLine(t, g, "auth succeeded", `"user":"alice"`)

	// A user the backend does not know.
	c = dialImplicitTLSFrom(t, "127.0.9.2", g.Submissions, cfg)
	c.ehlo("client.example.net")
	c.authPlain("", bobUser, bobPass).expectPrefix(t, "535 5.7.8 ")
	c.cmd("QUIT").expect(t, 221)

	// Wrong passwords: checked by the backend, counted, then throttled.
	failedBefore := strings.Count(pf.Log(), "SASL PLAIN authentication failed")
	c = dialImplicitTLSFrom(t, "127.0.9.3", g.Submissions, cfg)
	c.ehlo("client.example.net")
	c.authPlain("", aliceUser, "wrong-password-1").expectPrefix(t, "535 5.7.8 ")
	c.authPlain("", aliceUser, "wrong-password-2").expectPrefix(t, "421 4.7.0 ")
	c.expectClosed()
	if n := strings.Count(pf.Log(), "SASL PLAIN authentication failed") - failedBefore; n < 1 {
		t.Errorf("the backend logged %d failed SASL logins for the wrong passwords; the check did not reach it\n%s", n, pf.Log())
	}
	c = dialImplicitTLSFrom(t, "127.0.9.3", g.Submissions, cfg)
	c.ehlo("client.example.net")
	c.authPlain("", aliceUser, alicePass).expectPrefix(t, "421 4.7.0 ")
	expectLogLine(t, g, "auth failed", `"user":"alice"`, `"reason":"bad credentials"`, `"throttled":true`)

	// The backend is down: a temporary failure, not a verdict on the password.
	pf.Stop(t)
	c = dialImplicitTLSFrom(t, "127.0.9.4", g.Submissions, cfg)
	c.ehlo("client.example.net")
	c.authPlain("", "dave", "dave-password-9").expectPrefix(t, "454 4.7.0 ")
	c.authLogin("dave", "dave-password-9").expectPrefix(t, "454 4.7.0 ")
	c.cmd("QUIT").expect(t, 221)
	expectLogLine(t, g, "auth check failed", `"user":"dave"`)

	log := g.Log()
	for _, secret := range []string{alicePass, bobPass, "wrong-password-1", "wrong-password-2", "dave-password-9",
		b64("\x00" + aliceUser + "\x00" + alicePass), b64("\x00dave\x00dave-password-9"), b64("dave-password-9")} {
		if strings.Contains(log, secret) {
			t.Errorf("tlsguard's log contains %q", secret)
		}
	}
}

// tls.min_version: "1.3". A client limited to TLS 1.2 (Go's crypto/tls
// with MaxVersion 1.2, and openssl s_client -tls1_2) fails its handshake on
// the implicit-TLS listener and after STARTTLS; TLS 1.3 works on both. With
// the default "1.2" the same TLS 1.2 clients get through (the control).
func TestConfigKeyTLSMinVersion13(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g13 := configKeyGuard(t, pf.Addr, "", `  min_version: "1.2"`, `  min_version: "1.3"`)
	g12 := startTLSGuard(t, pf)

	tls12 := func(g *TLSGuard) *tls.Config {
		cfg := g.PKI.clientTLS()
		cfg.MaxVersion = tls.VersionTLS12
		return cfg
	}
	// Go, implicit TLS.
	_, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", g13.Submissions, tls12(g13))
	if err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Errorf("TLS 1.2 handshake on the implicit listener: err = %v, want a protocol version alert", err)
	}
	// Go, STARTTLS.
	c := dialSMTP(t, g13.Submission)
	c.ehlo("client.example.net")
	c.cmd("STARTTLS").expect(t, 220)
	tc := tls.Client(c.conn, tls12(g13))
	tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Errorf("TLS 1.2 handshake after STARTTLS: err = %v, want a protocol version alert", err)
	}
	// TLS 1.3 works on both.
	c = dialImplicitTLS(t, g13.Submissions, g13.PKI.clientTLS())
	if v := c.conn.(*tls.Conn).ConnectionState().Version; v != tls.VersionTLS13 {
		t.Errorf("implicit listener negotiated %x, want TLS 1.3", v)
	}
	c.ehlo("client.example.net")
	c.cmd("QUIT").expect(t, 221)
	c = dialSMTP(t, g13.Submission)
	c.ehlo("client.example.net")
	if st := c.startTLS(g13.PKI.clientTLS()); st.Version != tls.VersionTLS13 {
		t.Errorf("STARTTLS negotiated %x, want TLS 1.3", st.Version)
	}
	c.ehlo("client.example.net")
	c.cmd("QUIT").expect(t, 221)
	// Control: the same TLS 1.2 client is fine with the default.
	c = dialImplicitTLS(t, g12.Submissions, tls12(g12))
	c.cmd("QUIT").expect(t, 221)

	// OpenSSL's client.
	for _, l := range []struct{ name, addr string }{{"implicit", g13.Submissions}, {"starttls", g13.Submission}} {
		if out, ok := opensslClient(t, g13, l.addr, l.name == "starttls", "-tls1_2"); ok {
			t.Errorf("%s: openssl s_client -tls1_2 completed a handshake with min_version 1.3:\n%s", l.name, out)
		} else if !strings.Contains(out, "protocol version") {
			t.Errorf("%s: openssl s_client -tls1_2 failed, but not for the protocol version:\n%s", l.name, out)
		}
		if out, ok := opensslClient(t, g13, l.addr, l.name == "starttls", "-tls1_3"); !ok || !strings.Contains(out, "TLSv1.3") {
			t.Errorf("%s: openssl s_client -tls1_3 failed:\n%s", l.name, out)
		}
	}
	if out, ok := opensslClient(t, g12, g12.Submission, true, "-tls1_2"); !ok {
		t.Errorf("control: openssl s_client -tls1_2 failed with min_version 1.2:\n%s", out)
	}
}

// opensslClient runs openssl s_client against addr (STARTTLS or implicit
// TLS), verifying tlsguard's certificate, sends QUIT and reports whether
// the handshake completed and verified (exit status 0).
func opensslClient(t testing.TB, g *TLSGuard, addr string, starttls bool, args ...string) (string, bool) {
	t.Helper()
	openssl := requireTool(t, "openssl")
	all := []string{"s_client", "-connect", addr, "-servername", serverName, "-CAfile", g.PKI.CAFile,
		"-verify_return_error", "-brief", "-crlf"}
	if starttls {
		all = append(all, "-starttls", "smtp")
	}
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, openssl, append(all, args...)...)
	cmd.Stdin = strings.NewReader("QUIT\n")
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("openssl s_client timed out:\n%s", out)
	}
	return string(out), err == nil
}

// limits.write_timeout: a client that pipelines commands and never reads
// the replies fills the socket buffers, so tlsguard's write blocks; the
// write times out and tlsguard hangs up, while a well-behaved client is
// served meanwhile. (command_timeout stays at its default, 5 minutes, so it
// cannot be what ends the session.) Over plaintext (the mx listener) and
// over implicit TLS, where the blocked write is crypto/tls's.
func TestConfigKeyWriteTimeout(t *testing.T) {
	t.Parallel()
	t.Run("plaintext", func(t *testing.T) { t.Parallel(); testWriteTimeout(t, false) })
	t.Run("implicit TLS", func(t *testing.T) { t.Parallel(); testWriteTimeout(t, true) })
}

func testWriteTimeout(t *testing.T, implicitTLS bool) {
	pf := startPostfix(t)
	const writeTimeout = 5 * time.Second
	g := startTLSGuard(t, pf, withConfig(fmt.Sprintf("limits:\n  write_timeout: %v\n", writeTimeout)))
	addr := g.MX
	if implicitTLS {
		addr = g.Submissions
	}

	// A small receive buffer, so that little is needed to fill it.
	d := net.Dialer{Timeout: ioTimeout, Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}
	flood, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { flood.Close() })
	if implicitTLS {
		tc := tls.Client(flood, g.PKI.clientTLS())
		tc.SetDeadline(time.Now().Add(ioTimeout))
		if err := tc.Handshake(); err != nil {
			t.Fatalf("handshake: %v", err)
		}
		flood = tc
	}
	br := bufio.NewReader(flood)
	flood.SetReadDeadline(time.Now().Add(ioTimeout))
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "220") {
		t.Fatalf("greeting %q, %v", line, err)
	}

	// Write EHLOs (each answered with a dozen lines) until tlsguard stops
	// reading them: a write that cannot finish within half a second.
	var sent atomic.Int64
	stalled := make(chan error, 1)
	go func() {
		chunk := []byte(strings.Repeat("EHLO flood.example.net\r\n", 512))
		for sent.Load() < 256<<20 {
			flood.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
			n, err := flood.Write(chunk)
			sent.Add(int64(n))
			if err != nil {
				stalled <- err
				return
			}
		}
		stalled <- errors.New("256 MB of commands written and all read: tlsguard never blocked")
	}()
	select {
	case err := <-stalled:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("flooding client: %v (after %d bytes), want its write to block", err, sent.Load())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("flooding client still writing after 2 minutes (%d bytes)", sent.Load())
	}
	stalledAt := time.Now()
	t.Logf("tlsguard stopped reading after %d bytes of commands", sent.Load())

	// Meanwhile another client is served, while the stalled session is
	// still open (it has at least write_timeout to go).
	var c *smtpConn
	if implicitTLS {
		c = dialImplicitTLS(t, addr, g.PKI.clientTLS())
	} else {
		c = dialSMTP(t, addr)
	}
	c.ehlo("good.example.net")
	tryTransaction(t, c, carol, alice, "Subject: while another client stalls\r\n\r\nbody\r\n").expect(t, 250)
	if strings.Contains(g.Log(), `"helo":"flood.example.net"`) {
		t.Errorf("the stalled session ended before the other client was served (%v after the stall); nothing shows they overlapped", time.Since(stalledAt))
	}
	c.cmd("QUIT").expect(t, 221)
	pf.WaitMessages(t, alice, 1)

	// The stalled session ends without the client reading anything.
	rec := waitSessionLine(t, g, "flood.example.net", 60*time.Second)
	t.Logf("flood session ended %v after the client stalled: %v", time.Since(stalledAt).Round(time.Millisecond), rec)
	if ms, _ := rec["duration_ms"].(float64); ms < float64(writeTimeout.Milliseconds()) {
		t.Errorf("the flood session lasted %vms, less than write_timeout", ms)
	}
	if rec["end"] != "write timeout" {
		t.Errorf("the session line says end=%q, want \"write timeout\"", rec["end"])
	}
	// And the client sees the hang-up once it reads: the replies that fit
	// in the buffers, then the end.
	flood.SetReadDeadline(time.Now().Add(ioTimeout))
	_, err = io.Copy(io.Discard, br)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("the flooding client's connection is still open")
	}
}

// waitSessionLine waits until tlsguard logged the "session" line of the
// session whose EHLO name is helo, and returns it.
func waitSessionLine(t testing.TB, g *TLSGuard, helo string, within time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		for _, line := range strings.Split(g.Log(), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "session" && rec["helo"] == helo {
				return rec
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no session line for helo %s within %v", helo, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// limits.auth_fail_window: failures older than the window are forgotten,
// also when they never reached the limit. With auth_max_failures 3, two
// failures, then the window passes, then two more are still answered 535
// (counting from the start, the second would be the third failure and get
// 421); the third failure of the new window does get 421.
func TestConfigKeyAuthFailWindowForgetsFailures(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	const window = 2 * time.Second
	g := startTLSGuard(t, pf, withConfig(fmt.Sprintf("limits:\n  auth_fail_delay: 50ms\n  auth_max_failures: 3\n  auth_fail_window: %v\n", window)))

	start := time.Now()
	c := dialImplicitTLSFrom(t, "127.0.10.1", g.Submissions, g.PKI.clientTLS())
	c.ehlo("client.example.net")
	c.authPlain("", bobUser, "old-guess-1").expectPrefix(t, "535 5.7.8 ")
	c.authPlain("", bobUser, "old-guess-2").expectPrefix(t, "535 5.7.8 ")
	// Nothing to poll: the window is time itself.
	time.Sleep(time.Until(start.Add(window + time.Second)))
	c.authPlain("", bobUser, "new-guess-1").expectPrefix(t, "535 5.7.8 ")
	c.authPlain("", bobUser, "new-guess-2").expectPrefix(t, "535 5.7.8 ")
	c.authPlain("", bobUser, "new-guess-3").expectPrefix(t, "421 4.7.0 ")
	c.expectClosed()
}

// log.format: console. The log is for people: no line is JSON; each starts
// with an ISO 8601 time and a level word; the per-transaction and
// per-session lines still carry their fields (here as the trailing JSON
// object of the console encoder), with the same names and values.
func TestConfigKeyLogFormatConsole(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := configKeyGuard(t, pf.Addr, "", "  format: json", "  format: console")

	c := dialSMTP(t, g.MX)
	c.ehlo("console.example.net")
	end := tryTransaction(t, c, carol, alice, "Subject: console log\r\n\r\nbody\r\n").expect(t, 250)
	c.cmd("QUIT").expect(t, 221)
	id := queueIDOf(end)

	tx := waitConsoleLine(t, g, "transaction", id)
	for k, want := range map[string]any{"listener": "mx", "client_ip": "127.0.0.1", "from": carol,
		"delivered": true, "tls": false, "result": end.last()} {
		if tx[k] != want {
			t.Errorf("transaction line: %s = %#v, want %#v", k, tx[k], want)
		}
	}
	if rcpts, _ := tx["rcpts"].([]any); len(rcpts) != 1 || rcpts[0] != alice {
		t.Errorf("transaction line: rcpts = %#v, want [%s]", tx["rcpts"], alice)
	}
	sess := waitConsoleLine(t, g, "session", "console.example.net")
	if sess["session"] != tx["session"] || sess["helo"] != "console.example.net" || sess["delivered"] != float64(1) {
		t.Errorf("session line %v does not match transaction line %v", sess, tx)
	}

	for _, line := range strings.Split(strings.TrimSpace(g.Log()), "\n") {
		if json.Valid([]byte(line)) {
			t.Errorf("a JSON log line with log.format console: %s", line)
			continue
		}
		f := strings.SplitN(line, "\t", 3)
		if len(f) < 3 {
			t.Errorf("log line without tab-separated time, level and message: %q", line)
			continue
		}
		if _, err := time.Parse("2006-01-02T15:04:05.000Z0700", f[0]); err != nil {
			t.Errorf("log line does not start with an ISO 8601 time: %q", line)
		}
		switch f[1] {
		case "DEBUG", "INFO", "WARN", "ERROR":
		default:
			t.Errorf("log line has no level word: %q", line)
		}
	}
}

// waitConsoleLine waits for a console log line with message msg that
// contains want, and returns its fields (the trailing JSON object).
func waitConsoleLine(t testing.TB, g *TLSGuard, msg, want string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, line := range strings.Split(g.Log(), "\n") {
			i := strings.Index(line, "\t{")
			if i < 0 || !strings.Contains(line[:i]+"\t", "\t"+msg+"\t") || !strings.Contains(line, want) {
				continue
			}
			var rec map[string]any
			if err := json.Unmarshal([]byte(line[i+1:]), &rec); err != nil {
				t.Fatalf("fields of %q: %v", line, err)
			}
			return rec
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q console log line containing %q:\n%s", msg, want, g.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// backend.pool_idle and backend.pool_size, seen from a real Postfix and in
// the metrics. With pool_idle 2s, the backend connection of a finished
// session stays open (pooled; backend_connections_idle 1) and tlsguard
// closes it with QUIT once it has been idle for 2 s, without any further
// client activity (idle 0). With pool_size 0, every session's backend
// connection is closed with QUIT as the session ends, nothing is kept idle,
// and each session opens its own (backend_connections_opened_total counts
// the start-up probe and one per session).
func TestConfigKeyBackendPool(t *testing.T) {
	t.Parallel()
	// Postfix logs "disconnect from" when an smtpd session ends, with
	// quit=1 when the client said QUIT (start-up's EHLO probe included).
	quits := func(pf *Postfix) int {
		return len(regexp.MustCompile(`disconnect from \S+ .*quit=1`).FindAllString(pf.Log(), -1))
	}
	send := func(t *testing.T, g *TLSGuard, subject string) {
		c := dialSMTP(t, g.MX)
		c.ehlo("client.example.net")
		tryTransaction(t, c, carol, alice, "Subject: "+subject+"\r\n\r\nbody\r\n").expect(t, 250)
		c.cmd("QUIT").expect(t, 221)
		c.expectClosed()
	}
	// start runs a Postfix and tlsguard with one more backend key and the
	// admin endpoint; it returns how many QUITs Postfix has seen by then,
	// and a reader of one metric.
	start := func(t *testing.T, key string) (*Postfix, *TLSGuard, int, func(string) float64) {
		pf := startPostfix(t)
		admin := loopbackAddr(t)
		g := configKeyGuard(t, pf.Addr, fmt.Sprintf("admin:\n  address: %q\n", admin), "  timeout: 30s", "  timeout: 30s\n  "+key)
		metric := func(name string) float64 {
			_, body := httpGet(t, "http://"+admin+"/metrics")
			return metricValue(body, name)
		}
		return pf, g, quits(pf), metric
	}
	const opened, idle = "tlsguard_backend_connections_opened_total", "tlsguard_backend_connections_idle"
	t.Run("pool_idle", func(t *testing.T) {
		t.Parallel()
		pf, g, base, metric := start(t, "pool_idle: 2s")
		before := time.Now() // the connection goes idle after this
		send(t, g, "pooled")
		pf.WaitMessages(t, alice, 1)
		if n := metric(idle); n != 1 {
			t.Errorf("%s = %v after the session, want 1", idle, n)
		}
		time.Sleep(time.Until(before.Add(time.Second)))
		if n := quits(pf); n != base {
			t.Fatalf("the backend connection was closed within 1 s of the session (%d QUITs, %d before): not pooled", n, base)
		}
		waitUntil(t, "the idle backend connection closed with QUIT", 10*time.Second, func() bool { return quits(pf) == base+1 })
		if d := time.Since(before); d < 2*time.Second {
			t.Errorf("the pooled connection was closed %v after the session began, before pool_idle (2s)", d)
		}
		if n := metric(idle); n != 0 {
			t.Errorf("%s = %v after pool_idle, want 0", idle, n)
		}
		if n := metric(opened); n != 2 {
			t.Errorf("%s = %v, want 2 (start-up probe and the session)", opened, n)
		}
	})
	t.Run("pool_size 0", func(t *testing.T) {
		t.Parallel()
		pf, g, base, metric := start(t, "pool_size: 0")
		for i := 1; i <= 2; i++ {
			send(t, g, fmt.Sprintf("unpooled %d", i))
			waitUntil(t, fmt.Sprintf("session %d's backend connection closed with QUIT", i), 10*time.Second, func() bool { return quits(pf) == base+i })
			if n := metric(idle); n != 0 {
				t.Errorf("%s = %v with pool_size 0, want 0", idle, n)
			}
		}
		pf.WaitMessages(t, alice, 2)
		if n := metric(opened); n != 3 {
			t.Errorf("%s = %v, want 3 (start-up probe and one per session)", opened, n)
		}
	})
}

// waitUntil polls cond every 50 ms for up to within, and fails the test
// with what if it never holds.
func waitUntil(t testing.TB, what string, within time.Duration, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(within); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%s: not within %v", what, within)
		}
	}
}

// dsn: none: tlsguard does not advertise DSN although Postfix offers it,
// so DSN parameters are refused (504 5.5.4), even from a logged-in user,
// rather than accepted and then dropped; the backend receives none and
// sends no report. (The default and dsn: all: TestHardeningDSNBackscatter.)
func TestConfigKeyDSNNone(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t, postfixVerbose...)
	direct := dialSMTP(t, pf.Addr)
	if _, ok := direct.ehlo("control.example.net").extension("DSN"); !ok {
		t.Fatal("control: the backend does not offer DSN; the check below would prove nothing")
	}
	direct.cmd("QUIT").expect(t, 221)
	g := startTLSGuard(t, pf, withConfig("dsn: none\n"))

	c := dialImplicitTLS(t, g.Submissions, g.PKI.clientTLS())
	if line, ok := c.ehlo("client.example.net").extension("DSN"); ok {
		t.Errorf("dsn: none advertises %q", line)
	}
	c.authPlain("", aliceUser, alicePass).expectPrefix(t, "235 ")
	c.cmd("MAIL FROM:<"+alice+"> RET=HDRS").expectPrefix(t, "504 5.5.4 ")
	c.cmd("MAIL FROM:<"+alice+">").expect(t, 250)
	c.cmd("RCPT TO:<"+bob+"> NOTIFY=SUCCESS").expectPrefix(t, "504 5.5.4 ")
	c.cmd("RCPT TO:<"+bob+">").expect(t, 250)
	c.cmd("DATA").expect(t, 354)
	c.send("Subject: no dsn\r\n\r\nbody\r\n.\r\n")
	c.read().expect(t, 250)
	c.cmd("QUIT").expect(t, 221)

	pf.WaitMessages(t, bob, 1)
	pf.Settle(t)
	pf.ExpectEmpty(t, alice)
	for _, l := range postfixReceived(pf) {
		for _, p := range []string{"RET=", "ENVID=", "NOTIFY=", "ORCPT="} {
			if strings.Contains(strings.ToUpper(l), p) {
				t.Errorf("the backend received %s with dsn: none: %q", p, l)
			}
		}
	}
}

// backend.spool_after, seen from a real Postfix: a client silent for longer
// than spool_after (1s) after its RCPT gives its backend connection up
// (Postfix logs that session's end, QUIT after MAIL and RCPT, before the
// client has sent DATA); its message, sent later, is stored once on a new
// connection, and the client's 250 carries that message's queue id.
func TestConfigKeyBackendSpoolAfter(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := configKeyGuard(t, pf.Addr, "", "  timeout: 30s", "  timeout: 30s\n  spool_after: 1s")
	freed := regexp.MustCompile(`disconnect from \S+ ehlo=1 mail=1 rcpt=1 quit=1 `)
	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.cmd("MAIL FROM:<"+carol+">").expect(t, 250)
	c.cmd("RCPT TO:<"+alice+">").expect(t, 250)
	waitUntil(t, "Postfix sees the paused transaction's connection end", 10*time.Second, func() bool { return freed.MatchString(pf.Log()) })
	c.cmd("DATA").expect(t, 354)
	c.send("Subject: spooled after a pause\r\n\r\nbody\r\n.\r\n")
	r := c.read().expect(t, 250)
	c.cmd("QUIT").expect(t, 221)
	msgs := pf.WaitMessages(t, alice, 1)
	pf.Settle(t)
	if n := len(pf.Messages(t, alice)); n != 1 {
		t.Fatalf("%s holds %d messages, want 1", alice, n)
	}
	if id := queueIDOf(r); msgs[0].QueueID() != id {
		t.Errorf("the client's 250 %q does not name the stored message (%s)", r.raw, msgs[0].QueueID())
	}
}
