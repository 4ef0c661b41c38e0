package e2e

// Forwarding to the backend: its replies pass through, acceptance is end to
// end, and DATA cannot be smuggled past it.

import (
	"fmt"
	"strings"
	"testing"
)

// The backend's own refusal of an unknown mailbox reaches the client
// verbatim: its code, enhanced code and text.
func TestBackendRejectionPassedThrough(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	const want = "550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in virtual mailbox table"
	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.cmd("MAIL FROM:<someone@foreign.test>").expect(t, 250)
	if r := c.cmd("RCPT TO:<nobody@example.org>"); r.raw != want+"\r\n" {
		t.Errorf("RCPT to an unknown mailbox got %q, want Postfix's %q", r.raw, want)
	}
	c.cmd("RCPT TO:<"+alice+">").expect(t, 250) // the session goes on

	run := runSwaks(t, g.MX, g.PKI, "--tls", "--from", "someone@foreign.test", "--to", "nobody@example.org")
	if got := run.replyAfter("RCPT TO:<nobody@example.org>"); got != want {
		t.Errorf("swaks RCPT reply %q, want %q", got, want)
	}
}

// End of DATA: 250 only after the backend's 250, with its queue id; the
// backend's 5xx and 4xx at that point pass through instead.
func TestEndOfDataFollowsBackend(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	cases := []struct{ sender, want string }{
		{"eod-reject@foreign.test", "554 5.7.1 <eod-reject@foreign.test>: Sender address rejected: rejected at end of data by the backend"},
		{"eod-tempfail@foreign.test", "451 4.3.5 <eod-tempfail@foreign.test>: Sender address rejected: backend tempfail at end of data"},
	}
	for _, tc := range cases {
		c := dialSMTP(t, g.MX)
		c.ehlo("client.example.net")
		c.openData(t, tc.sender, alice)
		c.send("Subject: refused at the end\r\n\r\nbody\r\n.\r\n")
		if r := c.read(); r.raw != tc.want+"\r\n" {
			t.Errorf("end of DATA from %s got %q, want the backend's %q", tc.sender, r.raw, tc.want)
		}
		c.cmd("QUIT").expect(t, 221)
	}

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.openData(t, "someone@foreign.test", alice)
	c.send("Subject: accepted\r\n\r\nbody\r\n.\r\n")
	end := c.read().expect(t, 250)
	c.cmd("QUIT").expect(t, 221)

	msgs := pf.WaitMessages(t, alice, 1)
	if id := msgs[0].QueueID(); id == "" || !strings.Contains(end.text(), id) {
		t.Errorf("end-of-DATA reply %q does not carry Postfix's queue id %q", end.last(), id)
	}
	if got := msgs[0].Header.Get("Subject"); got != "accepted" {
		t.Errorf("delivered Subject = %q, want the accepted message only", got)
	}
}

// The backend is down when the client comes: a 4xx (451/421), never a 250
// for the message and never a 5xx, so the client keeps it and retries.
func TestBackendDownGivesTempfail(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)
	pf.Stop(t)

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	r := tryTransaction(t, c, "someone@foreign.test", alice, "Subject: backend down\r\n\r\nbody\r\n")
	expectBackendTempfail(t, r)
}

// The backend dies after RCPT: the end of DATA is a 4xx, and after the
// backend comes back nothing was delivered.
func TestBackendDiesMidTransaction(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.cmd("MAIL FROM:<someone@foreign.test>").expect(t, 250)
	c.cmd("RCPT TO:<"+alice+">").expect(t, 250)
	pf.Stop(t)
	r := c.cmd("DATA")
	if r.code == 354 {
		c.send("Subject: backend died\r\n\r\nbody\r\n.\r\n")
		r = c.read()
	}
	expectBackendTempfail(t, r)

	pf.Restart(t)
	pf.Settle(t)
	pf.ExpectEmpty(t, alice)
}

// tryTransaction runs MAIL, RCPT, DATA and the message as far as the server
// lets it, and returns the first reply that is not a success (or the final
// reply).
func tryTransaction(t testing.TB, c *smtpConn, from, to, msg string) reply {
	t.Helper()
	if r := c.cmd("MAIL FROM:<" + from + ">"); r.code != 250 {
		return r
	}
	if r := c.cmd("RCPT TO:<" + to + ">"); r.code != 250 {
		return r
	}
	if r := c.cmd("DATA"); r.code != 354 {
		return r
	}
	c.send(msg + ".\r\n")
	return c.read()
}

func expectBackendTempfail(t testing.TB, r reply) {
	t.Helper()
	if r.code != 451 && r.code != 421 {
		t.Fatalf("with the backend down got %q, want 451 4.4.1 or 421 4.4.2", r.raw)
	}
	if !strings.HasPrefix(r.enhanced(), "4.") {
		t.Errorf("reply %q has no 4.x.x enhanced code", r.raw)
	}
}

// Bare LF and bare CR in DATA never reach the backend as line endings. The
// test backend refuses a bare LF (550 5.5.2), so a leak fails here.
func TestBareLineEndingsNeverReachBackend(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.openData(t, "someone@foreign.test", alice)
	c.send("Subject: bare line endings\r\n\r\none\ntwo\r\nthree\rfour\r\n.\r\n")
	end := c.read()
	if end.code != 250 {
		t.Fatalf("end of DATA got %q, want 250 (normalize is the default)", end.raw)
	}
	m := pf.WaitMessages(t, alice, 1)[0]
	if got := string(m.Body); got != "one\ntwo\nthree\nfour\n" {
		t.Errorf("delivered body %q, want the bare LF and CR normalised to line ends", got)
	}
}

// smugglingMessage is a message whose body holds a non-standard end of data
// followed by a forged transaction to the victim; it ends properly.
func smugglingMessage(name, end string) string {
	return "Subject: smuggling " + name + "\r\n\r\nbefore" + end +
		"MAIL FROM:<ceo@example.org>\r\nRCPT TO:<" + victim + ">\r\nDATA\r\n" +
		"Subject: smuggled\r\n\r\nforged\r\n.\r\n"
}

// The control for TestSMTPSmugglingBlocked: sent straight to the naive
// backend, the payload does smuggle a message to the victim. So the test
// above would notice a proxy that let it through.
func TestSmugglingPayloadWorksAgainstNaiveBackend(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t, "smtpd_forbid_bare_newline = no")

	c := dialSMTP(t, pf.Addr)
	c.ehlo("client.example.net")
	c.openData(t, "someone@foreign.test", alice)
	c.send(smugglingMessage("control", "\n.\r\n"))
	for i := 0; i < 4; i++ { // end of the first message, MAIL, RCPT, DATA
		c.read()
	}
	c.read() // end of the smuggled message
	c.cmd("QUIT").expect(t, 221)
	if got := pf.WaitMessages(t, victim, 1)[0].Header.Get("Subject"); got != "smuggled" {
		t.Errorf("victim got Subject %q", got)
	}
}

// SMTP smuggling: a bare-LF end-of-data sequence inside the message must not
// end the message at a naive backend and start a second, forged one.
func TestSMTPSmugglingBlocked(t *testing.T) {
	t.Parallel()
	// A naive legacy backend that takes a bare LF as a line end.
	pf := startPostfix(t, "smtpd_forbid_bare_newline = no")
	g := startTLSGuard(t, pf)

	ends := map[string]string{`\n.\n`: "\n.\n", `\n.\r\n`: "\n.\r\n", `\r\n.\n`: "\r\n.\n", `\r.\r\n`: "\r.\r\n"}
	delivered := 0
	for name, end := range ends {
		c := dialSMTP(t, g.MX)
		c.ehlo("client.example.net")
		c.openData(t, "someone@foreign.test", alice)
		c.send(smugglingMessage(name, end))
		r := c.read()
		switch {
		case r.code == 250:
			delivered++
		case r.code/100 == 5 && r.enhanced() == "5.5.2":
		default:
			t.Errorf("%s: end of DATA got %q, want 250 or a 5.5.2 refusal", name, r.raw)
		}
		// Exactly one reply: a second one would answer a smuggled command.
		c.cmd("QUIT").expect(t, 221)
	}
	pf.WaitMessages(t, alice, delivered)
	pf.Settle(t)
	pf.ExpectEmpty(t, victim)
	for _, m := range pf.Messages(t, alice) {
		if !strings.Contains(string(m.Body), "forged") {
			t.Errorf("message %q was cut short at the backend: body %q", m.Header.Get("Subject"), m.Body)
		}
	}
}

// BDAT (CHUNKING, RFC 3030) carries bytes with no dot-stuffing: bare LF and
// CR in a chunk are normalised too, and a chunk boundary cannot end the
// message early at the backend.
func TestBDATBareLineEndingsNeverReachBackend(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.MX)
	if _, ok := c.ehlo("client.example.net").extension("CHUNKING"); !ok {
		t.Skip("CHUNKING not advertised: nothing to test") // not a failure: BDAT is optional
	}
	c.cmd("MAIL FROM:<someone@foreign.test>").expect(t, 250)
	c.cmd("RCPT TO:<"+alice+">").expect(t, 250)
	chunk1 := "Subject: bdat\r\n\r\none\ntwo\r\n"
	chunk2 := "three\rfour\n.\n"
	c.send(fmt.Sprintf("BDAT %d\r\n%s", len(chunk1), chunk1))
	c.read().expect(t, 250)
	c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(chunk2), chunk2))
	c.read().expect(t, 250)
	c.cmd("QUIT").expect(t, 221)

	m := pf.WaitMessages(t, alice, 1)[0]
	if got := string(m.Body); got != "one\ntwo\nthree\nfour\n.\n" {
		t.Errorf("delivered body %q, want the bare LF and CR normalised to line ends", got)
	}
}

// NUL in DATA is refused, never forwarded.
func TestNULInDataRefused(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.openData(t, "someone@foreign.test", alice)
	c.send("Subject: nul\r\n\r\nbefore\x00after\r\n.\r\n")
	c.read().expectClass(t, 5)
	c.cmd("QUIT").expect(t, 221)

	pf.Settle(t)
	pf.ExpectEmpty(t, alice)
}
