package e2e

// Limits, timeouts, throttling and shutdown: the bounded-everything rows of
// the contract, each with a small limit set in the config.

import (
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Failed AUTH is answered after a delay, and repeated failures from one IP
// end in 421 4.7.0 and a disconnect, for the right password too.
func TestRepeatedAuthFailuresThrottled(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  auth_max_failures: 3\n  auth_fail_delay: 500ms\n"))

	c := dialImplicitTLS(t, g.Submissions, g.PKI.clientTLS())
	c.ehlo("client.example.net")
	start := time.Now()
	c.authPlain("", aliceUser, "wrong-1").expectPrefix(t, "535 5.7.8 ")
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Errorf("a failed AUTH was answered after %v, want the configured 500ms delay", d)
	}
	var last reply
	for i := 2; i <= 4; i++ {
		last = c.authPlain("", aliceUser, "wrong-"+strconv.Itoa(i))
		if last.code != 535 {
			break
		}
	}
	last.expectPrefix(t, "421 4.7.0 ")
	c.expectClosed()

	// The IP stays throttled in a new session, even with the right password.
	c = dialImplicitTLS(t, g.Submissions, g.PKI.clientTLS())
	c.ehlo("client.example.net")
	c.authPlain("", aliceUser, alicePass).expectPrefix(t, "421 4.7.0 ")
	c.expectClosed()
}

// A second AUTH, and AUTH inside a transaction, get 503 5.5.1 (RFC 4954 4).
func TestAuthOutOfSequenceRefused(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialImplicitTLS(t, g.Submissions, g.PKI.clientTLS())
	c.ehlo("client.example.net")
	c.authPlain("", aliceUser, alicePass).expectPrefix(t, "235 ")
	c.authPlain("", bobUser, bobPass).expectPrefix(t, "503 5.5.1 ")

	c = dialImplicitTLS(t, g.Submissions, g.PKI.clientTLS())
	c.ehlo("client.example.net")
	c.cmd("MAIL FROM:<"+alice+">").expect(t, 250)
	c.authPlain("", aliceUser, alicePass).expectPrefix(t, "503 5.5.1 ")
}

// Past max_recipients: 452 4.5.3; the message goes to the accepted ones.
func TestTooManyRecipients(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  max_recipients: 2\n"))

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.cmd("MAIL FROM:<someone@foreign.test>").expect(t, 250)
	c.cmd("RCPT TO:<"+alice+">").expect(t, 250)
	c.cmd("RCPT TO:<"+bob+">").expect(t, 250)
	c.cmd("RCPT TO:<"+victim+">").expectPrefix(t, "452 4.5.3 ")
	c.cmd("DATA").expect(t, 354)
	c.send("Subject: two recipients\r\n\r\nbody\r\n.\r\n")
	c.read().expect(t, 250)
	c.cmd("QUIT").expect(t, 221)

	pf.WaitMessages(t, alice, 1)
	pf.WaitMessages(t, bob, 1)
	pf.Settle(t)
	pf.ExpectEmpty(t, victim)
}

// A message over max_message_size: SIZE advertises the limit, MAIL with a
// larger SIZE= and an oversized DATA both get 552 5.3.4, nothing delivered.
func TestMessageTooLarge(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  max_message_size: 4k\n"))

	c := dialSMTP(t, g.MX)
	ehlo := c.ehlo("client.example.net")
	if line, ok := ehlo.extension("SIZE"); !ok || line != "SIZE 4096" {
		t.Errorf("EHLO advertises %q, want SIZE 4096", line)
	}
	c.cmd("MAIL FROM:<someone@foreign.test> SIZE=100000").expectPrefix(t, "552 5.3.4 ")
	c.openData(t, "someone@foreign.test", alice)
	c.send("Subject: too large\r\n\r\n" + strings.Repeat(strings.Repeat("x", 78)+"\r\n", 200) + ".\r\n")
	c.read().expectPrefix(t, "552 5.3.4 ")
	c.cmd("QUIT").expect(t, 221)

	pf.Settle(t)
	pf.ExpectEmpty(t, alice)
}

// Sessions per client IP are bounded: one too many is turned away with a
// 4xx (or simply closed), and a slot frees up when a session ends.
func TestSessionsPerIPLimited(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  max_sessions_per_ip: 2\n"))

	// The start-up probe's sessions take a moment to end: retry on a 4xx.
	first := dialSMTPWhenFree(t, g.MX)
	dialSMTPWhenFree(t, g.MX)
	conn, err := net.DialTimeout("tcp", g.MX, ioTimeout)
	if err == nil {
		third := newSMTPConn(t, conn)
		if r, err := third.tryRead(ioTimeout); err == nil {
			r.expectClass(t, 4)
		}
		third.expectClosed()
	}

	first.cmd("QUIT").expect(t, 221)
	if err := waitGreeting(g.MX, g.exited, 10*time.Second); err != nil {
		t.Errorf("no session slot freed after a QUIT: %v", err)
	}
}

// dialSMTPWhenFree is dialSMTP that retries, for a bounded time, while the
// server turns the connection away with a 4xx.
func dialSMTPWhenFree(t testing.TB, addr string) *smtpConn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := net.DialTimeout("tcp", addr, ioTimeout)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		c := newSMTPConn(t, conn)
		r, err := c.tryRead(ioTimeout)
		if err == nil && r.code == 220 {
			return c
		}
		conn.Close()
		if time.Now().After(deadline) {
			t.Fatalf("%s still turns sessions away after 10s: %q %v", addr, r.raw, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// An idle client is told 421 4.4.2 and disconnected.
func TestIdleClientTimesOut(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  command_timeout: 1s\n"))

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.read().expectPrefix(t, "421 4.4.2 ") // we say nothing and wait
	c.expectClosed()
}

// A DATA upload that stops gets 421 4.4.2 and a close, never resynchronises
// into commands, and delivers nothing.
func TestStalledDataTimesOut(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  data_timeout: 1s\n"))

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.openData(t, "someone@foreign.test", alice)
	c.send("Subject: stalled\r\n\r\nhalf a mess")
	c.read().expectPrefix(t, "421 4.4.2 ")
	// The rest of the body arrives late: it must not run as commands. The
	// write may fail if the server is already gone, as it should be.
	c.conn.Write([]byte("age\r\nMAIL FROM:<ceo@example.org>\r\nRCPT TO:<" + victim + ">\r\nDATA\r\n"))
	c.expectClosedAfterReplies(0)

	pf.Settle(t)
	pf.ExpectEmpty(t, alice)
}

// A slow but moving upload is not cut off: each pause is shorter than
// data_timeout, the whole upload is longer.
func TestSlowMovingDataIsNotCutOff(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  data_timeout: 1s\n"))

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.openData(t, "someone@foreign.test", alice)
	c.send("Subject: slow\r\n\r\n")
	for i := 0; i < 8; i++ { // 8 × 400ms: a slow client is the scenario itself
		time.Sleep(400 * time.Millisecond)
		c.send("line " + strconv.Itoa(i) + "\r\n")
	}
	c.send(".\r\n")
	c.read().expect(t, 250)

	m := pf.WaitMessages(t, alice, 1)[0]
	if !strings.Contains(string(m.Body), "line 7") {
		t.Errorf("delivered body %q lacks its end", m.Body)
	}
}

// Bytes of another protocol (an HTTP request sent to a mail port) end the
// session.
func TestHTTPRequestDisconnected(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.MX)
	c.send("POST / HTTP/1.1\r\nHost: mail.example.org\r\nContent-Length: 40\r\n\r\nMAIL FROM:<a@foreign.test>\r\nRCPT TO:<b>")
	c.expectClosedAfterReplies(2)
}

// Addresses with 8-bit bytes need SMTPUTF8; control bytes are never valid.
func TestAddressSyntaxRefused(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.cmd("MAIL FROM:<jörg@foreign.test>").expectPrefix(t, "553 5.6.7 ")
	c.cmd("MAIL FROM:<someone@foreign.test>").expect(t, 250)
	c.cmd("RCPT TO:<al\x01ice@example.org>").expectPrefix(t, "553 5.1.3 ")
	c.cmd("RCPT TO:<"+alice+">").expect(t, 250)
}

// Extensions: only what the whole path can honour. A backend without
// SMTPUTF8 and DSN means tlsguard offers neither; REQUIRETLS never over a
// plaintext backend leg.
func TestExtensionsFollowBackend(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t, "smtputf8_enable = no", "smtpd_discard_ehlo_keywords = dsn")
	g := startTLSGuard(t, pf)

	for name, addr := range map[string]string{"submission": g.Submission, "mx": g.MX} {
		c := dialSMTP(t, addr)
		ehlo := c.ehlo("client.example.net")
		c.startTLS(g.PKI.clientTLS())
		ehloTLS := c.ehlo("client.example.net")
		for _, ext := range []string{"SMTPUTF8", "DSN", "REQUIRETLS"} {
			for phase, r := range map[string]reply{"before STARTTLS": ehlo, "after STARTTLS": ehloTLS} {
				if line, ok := r.extension(ext); ok {
					t.Errorf("%s %s: advertises %q, which the backend path cannot honour", name, phase, line)
				}
			}
		}
	}
}

// On SIGTERM tlsguard stops accepting, lets an open session finish its
// message, and after shutdown_grace says 421 4.3.2.
func TestShutdownLetsSessionsFinish(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("shutdown_grace: 3s\n"))

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.cmd("MAIL FROM:<someone@foreign.test>").expect(t, 250)
	g.cmd.Process.Signal(syscall.SIGTERM)
	waitNotListening(t, g.MX)

	c.cmd("RCPT TO:<"+alice+">").expect(t, 250)
	c.cmd("DATA").expect(t, 354)
	c.send("Subject: during shutdown\r\n\r\nbody\r\n.\r\n")
	c.read().expect(t, 250)
	c.read().expectPrefix(t, "421 4.3.2 ") // the grace is over
	c.expectClosed()
	pf.WaitMessages(t, alice, 1)

	select {
	case <-g.exited:
		if code := g.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("tlsguard exited %d after SIGTERM, want 0", code)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("tlsguard still running 15s after SIGTERM")
	}
}

// waitNotListening waits until addr refuses connections.
func waitNotListening(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatalf("%s still accepts connections 10s after SIGTERM", addr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
