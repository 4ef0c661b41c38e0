package proxy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"go.uber.org/zap"
)

const relayDenied = "550 5.7.1 Relaying denied. Authentication required."

// Contract: RCPT to another domain from an unauthenticated, untrusted
// client → exactly "550 5.7.1 Relaying denied. Authentication required.".
func TestUnauthenticatedRelayDenied(t *testing.T) {
	e := newEnv(t, nil)
	for _, l := range []string{lSubmission, lMX, lSubmissions} {
		c := e.session(t, l, l == lSubmissions, false)
		c.cmd("MAIL FROM:<spam@foreign.test>", 250)
		c.send("RCPT TO:<victim@foreign.test>")
		c.expectLine(relayDenied)
		c.send("RCPT TO:<victim@EXAMPLE.ORG.foreign.test>")
		c.expectLine(relayDenied)
	}
	settle()
	if got := e.be.rawLines("RCPT"); len(got) != 0 {
		t.Errorf("backend saw %q", got)
	}
}

// Contract: RCPT to a local domain is accepted from anyone (compared
// case-insensitively), and delivered.
func TestLocalDeliveryWithoutAuth(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lMX, false, false)
	code, text := c.sendMessage("someone@foreign.test", []string{"Bob@Example.ORG"}, "Subject: local\r\n\r\nhi\r\n")
	if code != 250 {
		t.Fatalf("%d %s", code, text)
	}
	m := e.be.messages()
	if len(m) != 1 || m[0].To[0] != "Bob@example.org" || m[0].From != "someone@foreign.test" {
		t.Fatalf("backend got %+v", m)
	}
	if !strings.Contains(string(m[0].Data), "with ESMTP\r\n") {
		t.Errorf("plaintext Received header: %q", m[0].Data)
	}
}

// Contract: relay policy is checked on every RCPT, not only the first.
func TestRelayCheckedOnEveryRcpt(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lMX, true, false)
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.send("RCPT TO:<victim@foreign.test>")
	c.expectLine(relayDenied)
	c.cmd("RCPT TO:<carol@example.org>", 250)
	c.send("RCPT TO:<victim2@foreign.test>")
	c.expectLine(relayDenied)
	c.cmd("DATA", 354)
	c.sendRaw("Subject: x\r\n\r\nbody\r\n.\r\n")
	c.expect(250)
	m := e.be.messages()
	if len(m) != 1 || strings.Join(m[0].To, ",") != "bob@example.org,carol@example.org" {
		t.Fatalf("backend got %+v", m)
	}
	for _, l := range e.be.rawLines("RCPT") {
		if strings.Contains(l, "foreign") {
			t.Errorf("backend saw %q", l)
		}
	}
}

// Contract: address tricks never turn a relay into a local recipient; when
// the client may relay, the backend receives exactly what was judged,
// re-quoted canonically.
func TestAddressTricks(t *testing.T) {
	tricks := []struct {
		rcpt     string // as the client writes it inside <>
		wireRcpt string // what the backend must receive inside <>
	}{
		{`user%foreign.test@example.org`, `user%foreign.test@example.org`},
		{`"victim@foreign.test"@example.org`, `"victim@foreign.test"@example.org`},
		{`foreign.test!user@example.org`, `foreign.test!user@example.org`},
		{`user@[127.0.0.1]`, `user@[127.0.0.1]`},
		{`"victim>"@example.org`, `"victim>"@example.org`},
		{`"a\"b@foreign.test"@example.org`, `"a\"b@foreign.test"@example.org`},
		{`@relay.test:victim@example.org`, ``}, // source route: see below
	}
	e := newEnv(t, nil)

	t.Run("unauthenticated", func(t *testing.T) {
		c := e.session(t, lMX, true, false)
		c.cmd("MAIL FROM:<x@foreign.test>", 250)
		for _, tr := range tricks {
			if tr.wireRcpt == "" {
				continue
			}
			c.send("RCPT TO:<" + tr.rcpt + ">")
			code, lines, err := c.reply()
			if err != nil {
				t.Fatal(err)
			}
			if code < 500 {
				t.Errorf("RCPT TO:<%s> from an unauthenticated client: %d %q", tr.rcpt, code, lines)
			}
		}
		settle()
		if got := e.be.rawLines("RCPT"); len(got) != 0 {
			t.Errorf("backend saw %q", got)
		}
	})

	t.Run("authenticated", func(t *testing.T) {
		c := e.session(t, lSubmissions, true, true)
		for _, tr := range tricks {
			if tr.wireRcpt == "" {
				continue
			}
			c.cmd("MAIL FROM:<"+testUser+">", 250)
			c.cmd("RCPT TO:<"+tr.rcpt+">", 250)
			c.cmd("RSET", 250)
		}
		settle()
		got := e.be.rawLines("RCPT TO:")
		for _, tr := range tricks {
			if tr.wireRcpt == "" {
				continue
			}
			if !contains(got, "RCPT TO:<"+tr.wireRcpt+">") {
				t.Errorf("backend never saw RCPT TO:<%s>; it saw %q", tr.wireRcpt, got)
			}
		}
	})

	t.Run("source route", func(t *testing.T) {
		// go-smtp drops the source route; what remains is judged and
		// forwarded: the route itself must never reach the backend.
		c := e.session(t, lSubmissions, true, true)
		c.cmd("MAIL FROM:<"+testUser+">", 250)
		c.cmd("RCPT TO:<@relay.test:victim@example.org>", 250)
		c.cmd("RSET", 250)
		settle()
		for _, l := range e.be.rawLines("RCPT") {
			if strings.Contains(l, "relay.test") {
				t.Errorf("backend saw the source route: %q", l)
			}
		}
	})
}

// Contract: the MAIL AUTH= parameter is never forwarded as given.
func TestMailAuthParamNotForwarded(t *testing.T) {
	be := newFakeBackend(t, func(fb *fakeBackend) { fb.offerAuth = true })
	e := newEnv(t, be)
	c := e.session(t, lSubmissions, true, true)
	c.cmd("MAIL FROM:<"+testUser+"> AUTH=ceo@example.org", 250)
	c.cmd("RCPT TO:<x@foreign.test>", 250)
	c.cmd("RSET", 250)
	settle()
	mails := e.be.rawLines("MAIL")
	if len(mails) == 0 {
		t.Fatal("backend saw no MAIL")
	}
	for _, l := range mails {
		if strings.Contains(l, "ceo@") {
			t.Errorf("backend saw the client's AUTH= parameter: %q", l)
		}
	}
}

// Contract: the backend's own RCPT rejection is passed through verbatim.
func TestBackendRcptRejectPassedThrough(t *testing.T) {
	be := newFakeBackend(t, func(fb *fakeBackend) {
		fb.rcptErr = func(to string) error {
			if strings.HasPrefix(to, "nobody@") {
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
					Message: "<nobody@example.org>: Recipient address rejected: User unknown in local recipient table"}
			}
			if strings.HasPrefix(to, "full@") {
				return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "Mailbox full"}
			}
			return nil
		}
	})
	e := newEnv(t, be)
	c := e.session(t, lMX, false, false)
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	c.send("RCPT TO:<nobody@example.org>")
	c.expectLine("550 5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in local recipient table")
	c.send("RCPT TO:<full@example.org>")
	c.expectLine("452 4.2.2 Mailbox full")
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.cmd("DATA", 354)
	c.sendRaw("Subject: x\r\n\r\nb\r\n.\r\n")
	c.expect(250)
	if m := e.be.messages(); len(m) != 1 || len(m[0].To) != 1 || m[0].To[0] != "bob@example.org" {
		t.Fatalf("backend got %+v", m)
	}
}

// A multi-line backend rejection is flattened to one line, code kept.
func TestBackendMultilineRejectFlattened(t *testing.T) {
	be := newFakeBackend(t, func(fb *fakeBackend) {
		fb.rcptErr = func(string) error {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Rejected\nsee https://help.example/"}
		}
	})
	e := newEnv(t, be)
	c := e.session(t, lMX, false, false)
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	c.send("RCPT TO:<bob@example.org>")
	c.expectLine("550 5.7.1 Rejected see https://help.example/")
}

// Contract: a backend MAIL refusal is passed through (at the first RCPT,
// since the backend leg starts there).
func TestBackendMailRefusalPassedThrough(t *testing.T) {
	be := newFakeBackend(t, func(fb *fakeBackend) {
		fb.mailErr = func(string) error {
			return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Sender address rejected: blocked"}
		}
	})
	e := newEnv(t, be)
	c := e.session(t, lMX, false, false)
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	c.send("RCPT TO:<bob@example.org>")
	c.expectLine("553 5.7.1 Sender address rejected: blocked")
	c.send("DATA")
	c.expectClass(5)
	if m := e.be.messages(); len(m) != 0 {
		t.Fatalf("backend got %+v", m)
	}
}

// Contract: backend unreachable → 451 4.4.1 at RCPT, nothing accepted.
func TestBackendDown(t *testing.T) {
	be := newFakeBackend(t)
	e := newEnv(t, be, func(c *proxyConfig) { c.Backend.Address = freePort(t) })
	c := e.session(t, lMX, false, false)
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	c.send("RCPT TO:<bob@example.org>")
	text := c.expect(451)
	if !strings.HasPrefix(text, "4.4.1 ") {
		t.Errorf("backend down: 451 %s", text)
	}
	c.send("DATA")
	c.expectClass(5) // no recipients: nothing can be accepted
	c.cmd("QUIT", 221)
}

// A backend that hangs at RCPT: 451 4.4.1 after the backend timeout.
func TestBackendHangsAtRcpt(t *testing.T) {
	be := newFakeBackend(t, func(fb *fakeBackend) { fb.rcptHang = make(chan struct{}) })
	e := newEnv(t, be, func(c *proxyConfig) { c.Backend.Timeout = 300 * time.Millisecond })
	c := e.session(t, lMX, false, false)
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	c.send("RCPT TO:<bob@example.org>")
	code, text := c.expectClass(4)
	if code != 451 && code != 421 {
		t.Errorf("backend hang: %d %s", code, text)
	}
	c.send("DATA")
	c.expectClass(5)
}

// Contract: end of DATA: 250 only after the backend's 250, with its text.
func TestDataReplyCarriesBackendText(t *testing.T) {
	be := newFakeBackend(t, func(fb *fakeBackend) {
		fb.dataReply = &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as 4XyZ123"}
	})
	e := newEnv(t, be)
	c := e.session(t, lMX, false, false)
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.cmd("DATA", 354)
	c.sendRaw("Subject: x\r\n\r\nb\r\n.\r\n")
	c.expectLine("250 2.0.0 Ok: queued as 4XyZ123")
}

// Contract: the backend's 4xx/5xx at the end of DATA is passed through.
func TestDataBackendRejectPassedThrough(t *testing.T) {
	for _, se := range []*smtp.SMTPError{
		{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Message rejected: spam"},
		{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Queue file write error"},
	} {
		be := newFakeBackend(t, func(fb *fakeBackend) { fb.dataErr = se })
		e := newEnv(t, be)
		c := e.session(t, lMX, false, false)
		code, text := c.sendMessage("x@foreign.test", []string{"bob@example.org"}, "Subject: x\r\n\r\nb\r\n")
		want := se.Message
		if code != se.Code || !strings.HasSuffix(text, want) {
			t.Errorf("backend %d %s: client got %d %s", se.Code, se.Message, code, text)
		}
		// The session goes on.
		c.cmd("NOOP", 250)
	}
}

// Contract: backend closes mid-DATA → 4xx, nothing stored.
func TestBackendClosesMidData(t *testing.T) {
	be := newFakeBackend(t, func(fb *fakeBackend) { fb.closeMidData = 100 })
	e := newEnv(t, be)
	c := e.session(t, lMX, false, false)
	body := "Subject: x\r\n\r\n" + strings.Repeat("0123456789012345678901234567890123456789\r\n", 2000)
	code, text := c.sendMessage("x@foreign.test", []string{"bob@example.org"}, body)
	if code/100 != 4 {
		t.Errorf("backend gone mid-DATA: %d %s", code, text)
	}
	if m := e.be.messages(); len(m) != 0 {
		t.Errorf("backend stored %d messages", len(m))
	}
	// The session is still usable.
	c.cmd("NOOP", 250)
}

// Two transactions in one session are both delivered.
func TestTwoTransactionsOneSession(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lSubmissions, true, true)
	for i := 0; i < 2; i++ {
		if code, text := c.sendMessage(testUser, []string{"r@foreign.test"}, "Subject: n\r\n\r\nb\r\n"); code != 250 {
			t.Fatalf("message %d: %d %s", i, code, text)
		}
	}
	if m := e.be.messages(); len(m) != 2 {
		t.Fatalf("backend got %d messages", len(m))
	}
	// At most one connection at start (learning EHLO) and one for both
	// messages: the backend leg is reused within the session.
	if n := e.be.connections(); n > 2 {
		t.Errorf("backend connections: %d, want at most 2 (start-up + one reused)", n)
	}
}

// The backend leg kept idle between two transactions may be closed by the
// backend (its own idle timeout): the next transaction must not fail
// because of that.
func TestSecondTransactionAfterBackendDroppedIdleConnection(t *testing.T) {
	be := newFakeBackend(t)
	be.closeIdle.Store(true)
	e := newEnv(t, be)
	c := e.session(t, lMX, false, false)
	if code, text := c.sendMessage("x@foreign.test", []string{"bob@example.org"}, "Subject: 1\r\n\r\nb\r\n"); code != 250 {
		t.Fatalf("first: %d %s", code, text)
	}
	time.Sleep(200 * time.Millisecond) // the backend hangs up meanwhile
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	c.send("RCPT TO:<bob@example.org>")
	code, lines, err := c.reply()
	if err != nil || code != 250 {
		t.Fatalf("second transaction after the backend closed its idle connection: %d %q %v", code, lines, err)
	}
}

// RSET mid-transaction: nothing delivered.
func TestRsetMidTransaction(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lMX, false, false)
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.cmd("RSET", 250)
	c.send("DATA")
	c.expectClass(5)
	c.cmd("QUIT", 221)
	settle()
	if m := e.be.messages(); len(m) != 0 {
		t.Fatalf("backend got %+v", m)
	}
	if got := e.be.rawLines("DATA"); len(got) != 0 {
		t.Errorf("backend saw DATA: %q", got)
	}
}

// Contract: too many recipients → 452 4.5.3.
func TestTooManyRecipients(t *testing.T) {
	e := newEnv(t, nil, withLimits(func(l *proxyLimits) { l.MaxRecipients = 2 }))
	c := e.session(t, lMX, false, false)
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	c.cmd("RCPT TO:<a@example.org>", 250)
	c.cmd("RCPT TO:<b@example.org>", 250)
	c.send("RCPT TO:<c@example.org>")
	text := c.expect(452)
	if !strings.HasPrefix(text, "4.5.3 ") {
		t.Errorf("too many recipients: 452 %s", text)
	}
}

// Contract: per-IP session limit → 421 and close.
func TestPerIPSessionLimit(t *testing.T) {
	e := newEnv(t, nil, withLimits(func(l *proxyLimits) { l.MaxSessionsPerIP = 2 }))
	a := e.dial(t, lSubmission)
	b := e.dial(t, lMX)
	c := e.dialNoGreet(t, lSubmission)
	text := c.expect(421)
	if !strings.HasPrefix(text, "4.") {
		t.Errorf("over the limit: 421 %s", text)
	}
	c.expectClosed()
	// Implicit TLS: closed too.
	d := e.dialPlainTo(t, e.addr[lSubmissions])
	d.readUntilClosed()
	// A slot frees when a session ends.
	a.cmd("QUIT", 221)
	a.expectClosed()
	waitFor(t, "a free slot", func() bool {
		x := e.dialNoGreet(t, lMX)
		code, _, err := x.reply()
		x.conn.Close()
		return err == nil && code == 220
	})
	b.cmd("NOOP", 250)
}

// The backend leg dies after one recipient was accepted: the next RCPT and
// DATA get 4xx, nothing is delivered (nothing lost: the client retries).
func TestBackendDiesMidTransaction(t *testing.T) {
	be := newFakeBackend(t, func(fb *fakeBackend) { fb.killOnRcpt = "die@" })
	e := newEnv(t, be)
	c := e.session(t, lMX, false, false)
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.send("RCPT TO:<die@example.org>")
	c.expectClass(4)
	c.send("RCPT TO:<carol@example.org>")
	c.expectClass(4)
	c.send("DATA")
	code, lines, err := c.reply()
	if err != nil {
		t.Fatal(err)
	}
	if code == 354 {
		c.sendRaw("Subject: x\r\n\r\nb\r\n.\r\n")
		code, lines, err = c.reply()
		if err != nil {
			t.Fatal(err)
		}
	}
	if code/100 != 4 {
		t.Errorf("DATA after the backend died: %d %q", code, lines)
	}
	settle()
	if m := e.be.messages(); len(m) != 0 {
		t.Errorf("backend stored %d messages", len(m))
	}
	// A fresh transaction in the same session works again.
	if code, text := c.sendMessage("x@foreign.test", []string{"bob@example.org"}, "Subject: again\r\n\r\nb\r\n"); code != 250 {
		t.Errorf("next transaction: %d %s", code, text)
	}
}

// An authenticator that cannot decide gives a temporary 454 4.7.0.
func TestAuthenticatorErrorIsTemporary(t *testing.T) {
	e := newEnv(t, nil, func(c *proxyConfig) { c.Auth = failingAuth{} })
	c := e.session(t, lSubmissions, true, false)
	c.send("AUTH PLAIN " + plainIR("", testUser, testPass))
	text := c.expect(454)
	if !strings.HasPrefix(text, "4.7.0 ") || strings.Contains(text, "ldap") {
		t.Errorf("authenticator error: 454 %s", text)
	}
}

// A listener's own session limit: 421 4.7.0 and close on that listener,
// while another listener still admits sessions within the total.
func TestListenerSessionLimit(t *testing.T) {
	e := newEnv(t, nil, func(c *proxyConfig) {
		for i := range c.Listeners {
			if c.Listeners[i].Name == lMX {
				c.Listeners[i].MaxSessions = 2
			}
		}
	})
	a := e.dial(t, lMX)
	e.dial(t, lMX)
	c := e.dialNoGreet(t, lMX)
	if text := c.expect(421); !strings.HasPrefix(text, "4.7.0 ") {
		t.Errorf("over the listener's limit: 421 %s", text)
	}
	c.expectClosed()
	e.dial(t, lSubmission).cmd("NOOP", 250)
	if n := e.logs.FilterMessage("connection refused").FilterField(zap.String("reason", "limit_listener")).Len(); n != 1 {
		t.Errorf("%d connection refused lines with reason limit_listener, want 1", n)
	}
	// The slot is free once a session has said QUIT and read its 221.
	a.cmd("QUIT", 221)
	e.dial(t, lMX).cmd("NOOP", 250)
}

// Total session limit → 421 and close.
func TestTotalSessionLimit(t *testing.T) {
	e := newEnv(t, nil, withLimits(func(l *proxyLimits) { l.MaxSessions = 1 }))
	e.dial(t, lMX)
	c := e.dialNoGreet(t, lSubmission)
	c.expect(421)
	c.expectClosed()
}
