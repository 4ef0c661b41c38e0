package e2e

// AUTH abuse: password guessing from one and from many addresses, malformed
// and cancelled SASL exchanges, overlong SASL lines, identity tricks. (One
// IP against one user, and AUTH twice, are TestRepeatedAuthFailuresThrottled
// and TestAuthOutOfSequenceRefused.)

import (
	"crypto/tls"
	"fmt"
	"strings"
	"testing"
	"time"
)

// dialImplicitTLSFrom connects from the loopback address src with TLS from
// the first byte and reads the greeting.
func dialImplicitTLSFrom(t testing.TB, src, addr string, cfg *tls.Config) *smtpConn {
	t.Helper()
	raw := dialFrom(t, src, addr)
	tc := tls.Client(raw, cfg)
	tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("TLS handshake from %s: %v", src, err)
	}
	tc.SetDeadline(time.Time{})
	c := newSMTPConn(t, tc)
	c.read().expect(t, 220)
	return c
}

// Guessing one user's password from many addresses (a botnet), one guess
// each: after auth_user_max_failures in all, further addresses without good
// history for bob are turned away with 454 4.7.0 before any check (the
// session stays open), even with the right password, by PLAIN or LOGIN.
// bob at the address he logged in from before is checked as usual and gets
// in; alice, from one of the guessing addresses, is unaffected.
func TestHardeningAuthBruteForceManyIPs(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  auth_max_failures: 3\n  auth_user_max_failures: 4\n  auth_fail_delay: 100ms\n"))
	cfg := g.PKI.clientTLS()

	const home = "127.0.1.30"
	c := dialImplicitTLSFrom(t, home, g.Submissions, cfg)
	c.ehlo("bob.example.net")
	c.authPlain("", bobUser, bobPass).expect(t, 235)
	c.cmd("QUIT").expect(t, 221)

	for i := 2; i <= 7; i++ {
		src := fmt.Sprintf("127.0.1.%d", i)
		c := dialImplicitTLSFrom(t, src, g.Submissions, cfg)
		c.ehlo("guesser.example.net")
		r := c.authPlain("", bobUser, fmt.Sprintf("guess-%d", i))
		if i <= 5 {
			r.expectPrefix(t, "535 5.7.8 ")
			continue
		}
		r.expectPrefix(t, "454 4.7.0 ")
		c.cmd("NOOP").expect(t, 250)
	}

	// The real bob, from a fresh address, with the right password.
	c = dialImplicitTLSFrom(t, "127.0.1.20", g.Submissions, cfg)
	c.ehlo("bob.example.net")
	c.authPlain("", bobUser, bobPass).expectPrefix(t, "454 4.7.0 ")
	c.cmd("MAIL FROM:<"+bob+">").expect(t, 250)
	expectRelayDenied(t, c.cmd("RCPT TO:<"+carol+">"))
	// LOGIN is throttled the same way.
	c = dialImplicitTLSFrom(t, "127.0.1.21", g.Submissions, cfg)
	c.ehlo("bob.example.net")
	c.authLogin(bobUser, bobPass).expectPrefix(t, "454 4.7.0 ")

	// bob at home is let in and delivers.
	c = dialImplicitTLSFrom(t, home, g.Submissions, cfg)
	c.ehlo("bob.example.net")
	c.authLogin(bobUser, bobPass).expect(t, 235)
	tryTransaction(t, c, bob, carol, "Subject: from home during a brute force\r\n\r\nbody\r\n").expect(t, 250)

	// Alice, from one of the guessing addresses, is not locked out.
	c = dialImplicitTLSFrom(t, "127.0.1.2", g.Submissions, cfg)
	c.ehlo("alice.example.net")
	c.authPlain("", aliceUser, alicePass).expect(t, 235)
	tryTransaction(t, c, alice, carol, "Subject: during a brute force\r\n\r\nbody\r\n").expect(t, 250)
	pf.WaitMessages(t, carol, 2)
	expectLogLine(t, g, "auth refused", `"user":"bob"`, `"reason":"user throttled at new addresses"`)
}

// Guessing many users' passwords from one address: the address is locked
// out after auth_max_failures, whatever user it tries next, and a client at
// another address is served meanwhile.
func TestHardeningAuthBruteForceOneIPManyUsers(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  auth_max_failures: 3\n  auth_fail_delay: 100ms\n"))
	cfg := g.PKI.clientTLS()

	c := dialImplicitTLSFrom(t, "127.0.2.1", g.Submissions, cfg)
	c.ehlo("guesser.example.net")
	var last reply
	for i := 0; i < 5; i++ {
		last = c.authPlain("", fmt.Sprintf("user%d", i), "guess")
		if last.code != 535 {
			break
		}
	}
	last.expectPrefix(t, "421 4.7.0 ")
	c.expectClosed()

	c = dialImplicitTLSFrom(t, "127.0.2.1", g.Submissions, cfg)
	c.ehlo("guesser.example.net")
	c.authPlain("", aliceUser, alicePass).expectPrefix(t, "421 4.7.0 ")
	c.expectClosed()

	c = dialImplicitTLSFrom(t, "127.0.2.2", g.Submissions, cfg)
	c.ehlo("alice.example.net")
	c.authPlain("", aliceUser, alicePass).expect(t, 235)
}

// An unknown user gets exactly the reply a wrong password gets, after the
// same delay: no user enumeration by text or (coarsely) by timing.
func TestHardeningAuthUnknownUserLooksLikeWrongPassword(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  auth_fail_delay: 300ms\n  auth_max_failures: 10\n"))

	c := dialImplicitTLS(t, g.Submissions, g.PKI.clientTLS())
	c.ehlo("client.example.net")
	start := time.Now()
	wrong := c.authPlain("", aliceUser, "wrong")
	dWrong := time.Since(start)
	start = time.Now()
	unknown := c.authPlain("", "nosuchuser", "wrong")
	dUnknown := time.Since(start)
	if wrong.raw != unknown.raw {
		t.Errorf("wrong password: %q; unknown user: %q; want the same reply", wrong.raw, unknown.raw)
	}
	wrong.expectPrefix(t, "535 5.7.8 ")
	if dWrong < 250*time.Millisecond || dUnknown < 250*time.Millisecond {
		t.Errorf("failures answered after %v (wrong password) and %v (unknown user); want the 300ms delay on both", dWrong, dUnknown)
	}
}

// Malformed SASL: empty and invalid base64, a PLAIN message with too few or
// too many fields, control bytes and an overlong user name, the "*" cancel.
// None authenticates, none crashes the session, and afterwards the session
// is still unauthenticated (relaying refused) but usable.
func TestHardeningAuthMalformed(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  auth_fail_delay: 50ms\n  auth_max_failures: 50\n"))

	c := dialImplicitTLS(t, g.Submissions, g.PKI.clientTLS())
	c.ehlo("client.example.net")
	notAuthenticated := func(name string, r reply) {
		t.Helper()
		if r.code/100 == 2 || r.code == 334 {
			t.Errorf("%s: got %q, want a refusal", name, r.raw)
		}
	}
	notAuthenticated("PLAIN with an empty initial response", c.cmd("AUTH PLAIN ="))
	notAuthenticated("PLAIN with invalid base64", c.cmd("AUTH PLAIN !!!notbase64!!!"))
	notAuthenticated("PLAIN without NULs", c.cmd("AUTH PLAIN "+b64(aliceUser+alicePass)))
	notAuthenticated("PLAIN with one NUL", c.cmd("AUTH PLAIN "+b64(aliceUser+"\x00"+alicePass)))
	notAuthenticated("PLAIN with four fields", c.cmd("AUTH PLAIN "+b64("\x00"+aliceUser+"\x00"+alicePass+"\x00x")))
	notAuthenticated("PLAIN with an empty user", c.cmd("AUTH PLAIN "+b64("\x00\x00"+alicePass)))
	notAuthenticated("PLAIN with an empty password", c.cmd("AUTH PLAIN "+b64("\x00"+aliceUser+"\x00")))
	notAuthenticated("PLAIN with a CR LF in the user", c.cmd("AUTH PLAIN "+b64("\x00"+aliceUser+"\r\nMAIL FROM:<x@y>\x00"+alicePass)))
	notAuthenticated("PLAIN with a 300-byte user", c.cmd("AUTH PLAIN "+b64("\x00"+strings.Repeat("a", 300)+"\x00"+alicePass)))
	notAuthenticated("PLAIN with the password of another user", c.cmd("AUTH PLAIN "+b64("\x00"+aliceUser+"\x00"+bobPass)))
	notAuthenticated("unknown mechanism", c.cmd("AUTH CRAM-MD5"))
	notAuthenticated("no mechanism", c.cmd("AUTH"))

	// Two-step PLAIN with invalid base64, then cancelled.
	c.cmd("AUTH PLAIN").expect(t, 334)
	notAuthenticated("PLAIN response with invalid base64", c.cmd("%%%"))
	c.cmd("AUTH PLAIN").expect(t, 334)
	c.cmd("*").expectPrefix(t, "501 ")
	// LOGIN cancelled at each step, and with invalid base64.
	c.cmd("AUTH LOGIN").expect(t, 334)
	c.cmd("*").expectPrefix(t, "501 ")
	c.cmd("AUTH LOGIN").expect(t, 334)
	c.cmd(b64(aliceUser)).expect(t, 334)
	c.cmd("*").expectPrefix(t, "501 ")
	c.cmd("AUTH LOGIN "+b64(aliceUser)).expect(t, 334)
	notAuthenticated("LOGIN password with invalid base64", c.cmd("not base64!"))
	// LOGIN with an empty user name.
	c.cmd("AUTH LOGIN").expect(t, 334)
	c.cmd("=").expect(t, 334)
	notAuthenticated("LOGIN with an empty user", c.cmd(b64(alicePass)))

	// Still unauthenticated: relaying refused; the session works.
	c.cmd("MAIL FROM:<"+alice+">").expect(t, 250)
	expectRelayDenied(t, c.cmd("RCPT TO:<"+carol+">"))
	c.cmd("RSET").expect(t, 250)
	// And a proper AUTH still works in the same session.
	c.authPlain("", aliceUser, alicePass).expect(t, 235)
	tryTransaction(t, c, alice, carol, "Subject: after malformed AUTH\r\n\r\nbody\r\n").expect(t, 250)
	pf.WaitMessages(t, carol, 1)

	if strings.Contains(g.Log(), alicePass) || strings.Contains(g.Log(), bobPass) {
		t.Errorf("a password appears in tlsguard's log")
	}
}

// Overlong SASL lines (past max_line_length), as an initial response and as
// a response to a challenge: refused and the connection closed, never
// authenticated, and what follows on the line is never run as a command.
func TestHardeningAuthOverlongLines(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  max_line_length: 1000\n"))
	long := b64("\x00" + aliceUser + "\x00" + alicePass + strings.Repeat("A", 1500))

	c := dialImplicitTLS(t, g.Submissions, g.PKI.clientTLS())
	c.ehlo("client.example.net")
	c.send("AUTH PLAIN " + long + "\r\nMAIL FROM:<" + alice + ">\r\n")
	got, closed := c.readUntilClosed(10 * time.Second)
	checkOverlong(t, "initial response", got, closed)

	for _, mech := range []string{"PLAIN", "LOGIN"} {
		c = dialImplicitTLS(t, g.Submissions, g.PKI.clientTLS())
		c.ehlo("client.example.net")
		c.cmd("AUTH "+mech).expect(t, 334)
		c.send(long + "\r\nMAIL FROM:<" + alice + ">\r\n")
		got, closed = c.readUntilClosed(10 * time.Second)
		checkOverlong(t, mech+" response", got, closed)
	}
}

func checkOverlong(t *testing.T, name string, got []string, closed bool) {
	t.Helper()
	for _, l := range got {
		if strings.HasPrefix(l, "2") || strings.HasPrefix(l, "3") {
			t.Errorf("%s: overlong SASL line answered %q (all: %q)", name, l, got)
		}
	}
	if !closed {
		t.Errorf("%s: connection still open after an overlong line; got %q", name, got)
	}
}

// Authorization identity tricks in AUTH PLAIN (RFC 4616): any authzid other
// than the login itself, however close (case, spaces, the address form,
// another user), is refused 535 5.7.8 and does not authenticate; the empty
// authzid and the login itself do. Impersonation attempts count as
// failures, so they are throttled like password guesses.
func TestHardeningAuthzidImpersonation(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  auth_fail_delay: 50ms\n  auth_max_failures: 20\n"))

	c := dialImplicitTLS(t, g.Submissions, g.PKI.clientTLS())
	c.ehlo("client.example.net")
	for _, authzid := range []string{bobUser, "Alice", "ALICE", " alice", "alice ", "alice@example.org", bob, "*", "alice\r\nMAIL FROM:<x@y>"} {
		c.authPlain(authzid, aliceUser, alicePass).expectPrefix(t, "535 5.7.8 ")
	}
	// Still unauthenticated.
	c.cmd("MAIL FROM:<"+bob+">").expect(t, 250)
	expectRelayDenied(t, c.cmd("RCPT TO:<"+carol+">"))
	c.cmd("RSET").expect(t, 250)
	c.authPlain(aliceUser, aliceUser, alicePass).expect(t, 235)
	c.cmd("QUIT").expect(t, 221)

	c = dialImplicitTLS(t, g.Submissions, g.PKI.clientTLS())
	c.ehlo("client.example.net")
	c.authPlain("", aliceUser, alicePass).expect(t, 235)
	expectLogLine(t, g, "auth failed", `"reason":"authorization identity differs from login"`)

	// Impersonation attempts are failures for the throttle.
	g2 := startTLSGuard(t, pf, withConfig("limits:\n  auth_fail_delay: 50ms\n  auth_max_failures: 3\n"))
	c = dialImplicitTLS(t, g2.Submissions, g2.PKI.clientTLS())
	c.ehlo("client.example.net")
	var last reply
	for i := 0; i < 4; i++ {
		last = c.authPlain(bobUser, aliceUser, alicePass)
		if last.code != 535 {
			break
		}
	}
	last.expectPrefix(t, "421 4.7.0 ")
}

// The memory of offenders is bounded in time (auth_fail_window) as well as
// in size (10^5 keys per budget: TestBudgetBoundedMemory in proxy): a
// locked-out address and user are let in again once the window has passed,
// and not before.
func TestHardeningAuthLockoutExpires(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  auth_fail_delay: 50ms\n  auth_max_failures: 2\n  auth_fail_window: 3s\n"))

	c := dialImplicitTLSFrom(t, "127.0.7.1", g.Submissions, g.PKI.clientTLS())
	c.ehlo("client.example.net")
	c.authPlain("", aliceUser, "wrong-1").expectPrefix(t, "535 5.7.8 ")
	start := time.Now()
	c.authPlain("", aliceUser, "wrong-2").expectPrefix(t, "421 4.7.0 ")
	c.expectClosed()

	c = dialImplicitTLSFrom(t, "127.0.7.1", g.Submissions, g.PKI.clientTLS())
	c.ehlo("client.example.net")
	if time.Since(start) < 2*time.Second { // else too late to tell
		c.authPlain("", aliceUser, alicePass).expectPrefix(t, "421 4.7.0 ")
	}

	time.Sleep(time.Until(start.Add(4 * time.Second)))
	c = dialImplicitTLSFrom(t, "127.0.7.1", g.Submissions, g.PKI.clientTLS())
	c.ehlo("client.example.net")
	c.authPlain("", aliceUser, alicePass).expect(t, 235)
	tryTransaction(t, c, alice, carol, "Subject: after the lockout window\r\n\r\nbody\r\n").expect(t, 250)
	pf.WaitMessages(t, carol, 1)
}
