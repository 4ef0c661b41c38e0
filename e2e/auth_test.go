package e2e

// AUTH: credentials from an htpasswd file written by `htpasswd -B`.

import (
	"strings"
	"testing"
)

// A wrong password gets 535 5.7.8 and leaves the session unauthenticated.
func TestWrongPasswordRefused(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialImplicitTLS(t, g.Submissions, g.PKI.clientTLS())
	c.ehlo("client.example.net")
	c.authPlain("", aliceUser, "not-"+alicePass).expectPrefix(t, "535 5.7.8 ")
	c.cmd("MAIL FROM:<"+alice+">").expect(t, 250)
	c.cmd("RCPT TO:<"+carol+">").expectPrefix(t, relayDenied)

	// The same through smtplib with AUTH LOGIN on 587.
	run := runPython(t, g.Submission, g.PKI, "--tls", "starttls",
		"--user", bobUser, "--password", alicePass, "--auth", "LOGIN",
		"--mail-from", bob, "--rcpt", carol)
	if auth := run.step(t, "auth"); auth.Code != 535 || !strings.HasPrefix(auth.Msg, "5.7.8") {
		t.Errorf("smtplib AUTH LOGIN with a wrong password: %d %s, want 535 5.7.8", auth.Code, auth.Msg)
	}
	pf.Settle(t)
	pf.ExpectEmpty(t, carol)
}

// AUTH PLAIN's authorization identity may not name another user: no
// impersonation. The same identity as the login is fine.
func TestAuthzidDifferentFromLoginRefused(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialImplicitTLS(t, g.Submissions, g.PKI.clientTLS())
	c.ehlo("client.example.net")
	c.authPlain(bobUser, aliceUser, alicePass).expectPrefix(t, "535 5.7.8 ")
	c.cmd("MAIL FROM:<"+bob+">").expect(t, 250)
	c.cmd("RCPT TO:<"+carol+">").expectPrefix(t, relayDenied)
	c.cmd("RSET").expect(t, 250)
	c.authPlain(aliceUser, aliceUser, alicePass).expectPrefix(t, "235 ")
}

// AUTH LOGIN on 587 after STARTTLS with swaks, relaying to a foreign domain.
func TestSTARTTLSAuthLoginRelaysWithSwaks(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	run := runSwaks(t, g.Submission, g.PKI, "--tls",
		"--auth", "LOGIN", "--auth-user", bobUser, "--auth-password", bobPass,
		"--from", bob, "--to", carol, "--header", "Subject: 587 login")
	run.expectOK(t)
	m := pf.WaitMessages(t, carol, 1)[0]
	rcv := tlsguardReceived(t, m)
	expectWord(t, rcv, "ESMTPSA")
	expectTLSVersion(t, rcv)
}

// A listener with auth: false never offers AUTH, before or after STARTTLS,
// and refuses it if tried.
func TestAuthDisabledListenerNeverOffersAuth(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.MX)
	if line, ok := c.ehlo("client.example.net").extension("AUTH"); ok {
		t.Errorf("auth: false listener advertises %q before STARTTLS", line)
	}
	c.startTLS(g.PKI.clientTLS())
	if line, ok := c.ehlo("client.example.net").extension("AUTH"); ok {
		t.Errorf("auth: false listener advertises %q after STARTTLS", line)
	}
	c.authPlain("", aliceUser, alicePass).expectClass(t, 5)
	c.cmd("NOOP").expect(t, 250)
	c.cmd("MAIL FROM:<"+alice+">").expect(t, 250)
	c.cmd("RCPT TO:<"+carol+">").expectPrefix(t, relayDenied)
}
