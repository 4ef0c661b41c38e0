package e2e

// STARTTLS command injection (CVE-2011-0411 class) and STARTTLS misuse,
// with raw bytes against the real binary. The plain "commands pipelined in
// the same packet" case is TestSTARTTLSDiscardsPipelinedPlaintext.

import (
	"net"
	"strings"
	"testing"
	"time"
)

// Commands sent in a second packet after STARTTLS, before the client has
// read the 220, reach the server while it waits for a ClientHello: they are
// never run as commands (in plaintext or inside TLS), the handshake fails
// and the connection is closed. Nothing reaches the backend.
func TestHardeningSTARTTLSInjectionSecondPacket(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	for _, addr := range []string{g.Submission, g.MX} {
		c := dialSMTP(t, addr)
		c.ehlo("client.example.net")
		c.send("STARTTLS\r\n")
		time.Sleep(20 * time.Millisecond) // a second packet
		c.send("MAIL FROM:<ceo@example.org>\r\nRCPT TO:<" + victim + ">\r\nDATA\r\nSubject: injected\r\n\r\nx\r\n.\r\n")
		got, closed := c.readUntilClosed(10 * time.Second)
		if !closed {
			t.Errorf("%s: connection still open after plaintext in place of a ClientHello; got %q", addr, got)
		}
		if len(got) == 0 || !strings.HasPrefix(got[0], "220 ") {
			t.Errorf("%s: first reply %q, want 220 to STARTTLS", addr, got)
		}
		for _, l := range got[min(1, len(got)):] {
			if l != "" && (l[0] >= '0' && l[0] <= '9') {
				t.Errorf("%s: plaintext reply %q after 220 Ready to start TLS: injected commands were read", addr, l)
			}
		}
	}
	pf.Settle(t)
	pf.ExpectEmpty(t, victim)
	if n := postfixAccepted(pf); n != 0 {
		t.Errorf("the backend took %d message(s) in", n)
	}
}

// Commands pipelined behind STARTTLS in the same packet are not run after
// the handshake, on the MX listener too (the 587 role is covered by
// TestSTARTTLSDiscardsPipelinedPlaintext), including a whole DATA.
func TestHardeningSTARTTLSInjectionWholeTransactionMX(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.send("STARTTLS\r\nEHLO evil\r\nMAIL FROM:<ceo@example.org>\r\nRCPT TO:<" + victim + ">\r\nDATA\r\nSubject: injected\r\n\r\nx\r\n.\r\n")
	c.read().expect(t, 220)
	c.handshake(g.PKI.clientTLS())
	ehlo := c.ehlo("client.example.net")
	if len(ehlo.lines) < 2 {
		t.Fatalf("first reply in TLS %q is not an EHLO reply", ehlo.raw)
	}
	// No transaction is open: DATA is out of sequence.
	c.cmd("DATA").expectClass(t, 5)
	c.cmd("QUIT").expect(t, 221)
	pf.Settle(t)
	pf.ExpectEmpty(t, victim)
}

// A second STARTTLS inside TLS is refused (502 5.5.1), never answered 220
// (a 220 would make the client start a TLS-in-TLS handshake or fall back),
// and the session goes on.
func TestHardeningSTARTTLSTwice(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.Submission)
	c.ehlo("client.example.net")
	c.startTLS(g.PKI.clientTLS())
	ehlo := c.ehlo("client.example.net")
	if line, ok := ehlo.extension("STARTTLS"); ok {
		t.Errorf("STARTTLS still advertised inside TLS: %q", line)
	}
	c.cmd("STARTTLS").expectPrefix(t, "502 5.5.1 ")
	c.authPlain("", aliceUser, alicePass).expect(t, 235)
	r := tryTransaction(t, c, alice, carol, "Subject: after a second STARTTLS\r\n\r\nbody\r\n")
	r.expect(t, 250)
	c.cmd("QUIT").expect(t, 221)
	pf.WaitMessages(t, carol, 1)
}

// RFC 3207 4: the command is "STARTTLS" with no parameters. "STARTTLS foo"
// is a syntax error (501 5.5.4), no handshake starts, and the session goes
// on: a correct STARTTLS then works.
func TestHardeningSTARTTLSWithParameter(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	for _, addr := range []string{g.Submission, g.MX} {
		c := dialSMTP(t, addr)
		c.ehlo("client.example.net")
		c.cmd("STARTTLS foo").expectPrefix(t, "501 5.5.4 ")
		c.cmd("NOOP").expect(t, 250)
		c.startTLS(g.PKI.clientTLS())
		c.ehlo("client.example.net")
		c.cmd("QUIT").expect(t, 221)
	}
}

// STARTTLS on the implicit-TLS port: inside TLS it is refused and not
// advertised; sent in plaintext (no ClientHello) the handshake fails and the
// connection closes without any SMTP reply.
func TestHardeningSTARTTLSOnImplicitTLSPort(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialImplicitTLS(t, g.Submissions, g.PKI.clientTLS())
	if line, ok := c.ehlo("client.example.net").extension("STARTTLS"); ok {
		t.Errorf("implicit TLS listener advertises %q", line)
	}
	c.cmd("STARTTLS").expectPrefix(t, "502 5.5.1 ")
	c.cmd("NOOP").expect(t, 250)

	conn, err := net.DialTimeout("tcp", g.Submissions, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	raw := newSMTPConn(t, conn)
	raw.send("EHLO client.example.net\r\nSTARTTLS\r\nMAIL FROM:<ceo@example.org>\r\n")
	got, closed := raw.readUntilClosed(10 * time.Second)
	if !closed {
		t.Errorf("plaintext on the implicit TLS port: still open, got %q", got)
	}
	for _, l := range got {
		if l != "" && l[0] >= '0' && l[0] <= '9' {
			t.Errorf("plaintext SMTP reply %q on the implicit TLS port", l)
		}
	}
	pf.Settle(t)
	if n := postfixAccepted(pf); n != 0 {
		t.Errorf("the backend took %d message(s) in", n)
	}
}

// STARTTLS in the middle of a transaction: either refused, or the
// transaction (already mirrored to the backend up to RCPT) is forgotten
// entirely: DATA afterwards has no transaction, and the recipient given
// before TLS gets nothing. A new transaction inside TLS delivers once.
func TestHardeningSTARTTLSAfterMail(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.cmd("MAIL FROM:<someone@foreign.test>").expect(t, 250)
	c.cmd("RCPT TO:<"+victim+">").expect(t, 250)
	r := c.cmd("STARTTLS")
	if r.code != 220 {
		r.expectClass(t, 5)
		c.cmd("RSET").expect(t, 250)
		c.startTLS(g.PKI.clientTLS())
	} else {
		c.handshake(g.PKI.clientTLS())
	}
	// Without EHLO after TLS nothing goes (RFC 3207 4.2: state forgotten).
	c.cmd("DATA").expectClass(t, 5)
	c.ehlo("client.example.net")
	c.cmd("DATA").expectClass(t, 5)
	r = tryTransaction(t, c, "someone@foreign.test", bob, "Subject: inside TLS\r\n\r\nbody\r\n")
	r.expect(t, 250)
	c.cmd("QUIT").expect(t, 221)

	pf.WaitMessages(t, bob, 1)
	pf.Settle(t)
	pf.ExpectEmpty(t, victim)
}

// The reverse direction: with commands pipelined before STARTTLS, every
// plaintext reply comes before the 220 and nothing follows it in plaintext,
// so no plaintext server bytes (which a man in the middle could forge) are
// left to be read as if they came through TLS.
func TestHardeningSTARTTLSNoPlaintextAfter220(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.Submission)
	c.send("EHLO a\r\nNOOP\r\nSTARTTLS\r\n")
	c.read().expect(t, 250)
	c.read().expect(t, 250)
	c.read().expect(t, 220)
	// handshake fails the test if anything is buffered after the 220.
	c.handshake(g.PKI.clientTLS())
	c.ehlo("client.example.net")
}
