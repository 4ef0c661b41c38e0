package proxy_test

import (
	"crypto/tls"
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

func TestGreeting(t *testing.T) {
	e := newEnv(t, nil)
	for _, l := range []string{lSubmissions, lSubmission, lMX, lPlain} {
		c := e.dialNoGreet(t, l)
		text := c.expect(220)
		if !strings.HasPrefix(text, "mail.example.org ") {
			t.Errorf("%s: greeting %q does not name the hostname", l, text)
		}
		c.cmd("QUIT", 221)
	}
}

// Contract: 587/25 before STARTTLS, EHLO advertises STARTTLS, SIZE,
// PIPELINING, 8BITMIME, ENHANCEDSTATUSCODES; never AUTH.
func TestEHLOBeforeSTARTTLS(t *testing.T) {
	e := newEnv(t, nil)
	for _, l := range []string{lSubmission, lMX, lStrict} {
		c := e.dial(t, l)
		ext := c.ehlo()
		for _, want := range []string{"STARTTLS", "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"} {
			if !contains(ext, want) {
				t.Errorf("%s: EHLO lacks %s: %q", l, want, ext)
			}
		}
		if !hasPrefix(ext, "SIZE") {
			t.Errorf("%s: EHLO lacks SIZE: %q", l, ext)
		}
		if hasPrefix(ext, "AUTH") {
			t.Errorf("%s: EHLO before TLS advertises AUTH: %q", l, ext)
		}
	}
}

// A plaintext-only listener with an authenticator configured never offers AUTH.
func TestPlainListenerNeverOffersAuth(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(t, lPlain)
	ext := c.ehlo()
	if hasPrefix(ext, "AUTH") || contains(ext, "STARTTLS") {
		t.Errorf("plaintext listener EHLO: %q", ext)
	}
	c.send("AUTH PLAIN " + plainIR("", testUser, testPass))
	c.expectClass(5)
	if n := e.auth.calls.Load(); n != 0 {
		t.Errorf("authenticator consulted %d times", n)
	}
}

// The SIZE advertised is the configured limit (go-smtp refuses a message of
// exactly MaxMessageBytes, so what is advertised must not be that value).
func TestEHLOAdvertisesConfiguredSize(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(t, lSubmission)
	ext := c.ehlo()
	want := "SIZE 1048576"
	if !contains(ext, want) {
		t.Errorf("EHLO: want %q (the configured MaxMessageBytes), got %q", want, ext)
	}
}

// Contract: AUTH before TLS is refused (530 5.7.0 or 523 5.7.10); no
// credential is read.
func TestAuthBeforeTLSRefusedWithoutReadingCredentials(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(t, lSubmission)
	c.ehlo()
	c.send("AUTH PLAIN " + plainIR("", testUser, testPass))
	code, text := c.expectClass(5)
	if !(code == 530 && strings.HasPrefix(text, "5.7.0")) && !(code == 523 && strings.HasPrefix(text, "5.7.10")) {
		t.Errorf("AUTH before TLS: got %d %s", code, text)
	}
	// The next line is a command, not a SASL response.
	c.cmd("NOOP", 250)
	// AUTH without an initial response: no 334 challenge either.
	c.send("AUTH LOGIN")
	code, text = c.expectClass(5)
	if code != 530 && code != 523 {
		t.Errorf("AUTH LOGIN before TLS: %d %s", code, text)
	}
	c.cmd("MAIL FROM:<a@b.test>", 250)
	if n := e.auth.calls.Load(); n != 0 {
		t.Errorf("authenticator consulted %d times before TLS", n)
	}
	// And not authenticated: relaying is refused.
	c.send("RCPT TO:<x@foreign.test>")
	c.expectLine("550 5.7.1 Relaying denied. Authentication required.")
}

// Contract: after STARTTLS all earlier state is forgotten, EHLO again, AUTH
// PLAIN LOGIN advertised.
func TestSTARTTLSThenAuthAdvertised(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(t, lSubmission)
	c.ehlo()
	c.cmd("MAIL FROM:<a@b.test>", 250)
	c.starttls()
	// State forgotten: no MAIL before EHLO.
	c.send("RCPT TO:<bob@example.org>")
	c.expectClass(5)
	ext := c.ehlo()
	if !contains(ext, "AUTH PLAIN LOGIN") {
		t.Errorf("EHLO after STARTTLS: want AUTH PLAIN LOGIN, got %q", ext)
	}
	if contains(ext, "STARTTLS") {
		t.Errorf("EHLO after STARTTLS still offers STARTTLS: %q", ext)
	}
	c.send("RCPT TO:<bob@example.org>")
	c.expectClass(5) // the MAIL from before TLS is gone
	c.authPlain(testUser, testPass)
}

// Contract: STARTTLS with commands pipelined behind it in the same packet:
// the plaintext is discarded, never executed after the handshake.
func TestSTARTTLSPipelinedCommandsDiscarded(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(t, lSubmission)
	c.ehlo()
	c.sendRaw("STARTTLS\r\nEHLO evil.test\r\nMAIL FROM:<a@b.test>\r\n")
	c.expect(220)
	tc := tls.Client(c.conn, clientTLSConfig(t))
	tc.SetDeadline(time.Now().Add(waitMax))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	tc.SetDeadline(time.Time{})
	c.conn = tc
	c.r = newReader(tc)
	// If the injected EHLO/MAIL had been run, RCPT would be accepted.
	c.send("RCPT TO:<bob@example.org>")
	code, text := c.expectClass(5)
	t.Logf("RCPT after pipelined plaintext: %d %s", code, text)
	c.ehlo()
	c.send("RCPT TO:<bob@example.org>")
	c.expectClass(5)
}

// A failed STARTTLS handshake closes the connection instead of carrying on
// in plaintext.
func TestSTARTTLSFailedHandshakeCloses(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(t, lSubmission)
	c.ehlo()
	c.cmd("STARTTLS", 220)
	c.sendRaw("this is not a TLS ClientHello at all\r\nEHLO x\r\n")
	out := c.readUntilClosed()
	for _, l := range strings.Split(out, "\r\n") {
		if len(l) >= 3 && l[0] >= '2' && l[0] <= '5' && l[1] >= '0' && l[1] <= '9' && l[2] >= '0' && l[2] <= '9' {
			t.Errorf("plaintext reply after a failed handshake: %q", l)
		}
	}
}

// Contract: 465 is TLS from the first byte; AUTH advertised after EHLO.
func TestImplicitTLSAdvertisesAuth(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(t, lSubmissions)
	ext := c.ehlo()
	if !contains(ext, "AUTH PLAIN LOGIN") {
		t.Errorf("465 EHLO: %q", ext)
	}
	if contains(ext, "STARTTLS") {
		t.Errorf("465 EHLO offers STARTTLS: %q", ext)
	}
	// A plaintext client on 465 never gets a greeting.
	pc := e.dialPlainTo(t, e.addr[lSubmissions])
	pc.sendRaw("EHLO x\r\n")
	out := pc.readUntilClosed()
	if strings.Contains(out, "220") || strings.Contains(out, "250") {
		t.Errorf("plaintext client on implicit TLS got %q", out)
	}
}

// Contract: auth: false listener never offers AUTH, even after TLS.
func TestNoAuthListener(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lMX, true, false)
	c.send("EHLO again.test")
	_, lines, _ := c.reply()
	for _, l := range lines {
		if strings.HasPrefix(strings.ToUpper(l), "AUTH") {
			t.Errorf("mx listener advertises %q after TLS", l)
		}
	}
	c.send("AUTH PLAIN " + plainIR("", testUser, testPass))
	c.expectClass(5)
	if n := e.auth.calls.Load(); n != 0 {
		t.Errorf("authenticator consulted %d times on an auth:false listener", n)
	}
}

// Contract: MAIL before TLS on a require_tls listener → 530 5.7.0.
func TestRequireTLS(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(t, lStrict)
	c.ehlo()
	c.send("MAIL FROM:<a@b.test>")
	c.expectLine("530 5.7.0 Must issue a STARTTLS command first")
	c.starttls()
	c.ehlo()
	c.cmd("MAIL FROM:<a@b.test>", 250)
}

// Contract: implicit TLS, AUTH PLAIN, relay to a foreign domain; the
// backend gets the message with a Received header naming ESMTPSA, the TLS
// version and the cipher.
func TestImplicitTLSAuthPlainRelay(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lSubmissions, true, true)
	code, text := c.sendMessage(testUser, []string{"friend@foreign.test"}, "Subject: hi\r\n\r\nHello.\r\n")
	if code != 250 {
		t.Fatalf("end of DATA: %d %s", code, text)
	}
	msgs := e.be.messages()
	if len(msgs) != 1 {
		t.Fatalf("backend got %d messages", len(msgs))
	}
	m := msgs[0]
	if m.From != testUser || len(m.To) != 1 || m.To[0] != "friend@foreign.test" {
		t.Errorf("envelope: from %q to %q", m.From, m.To)
	}
	st := c.conn.(*tls.Conn).ConnectionState()
	hdr := string(m.Data[:len(m.Data)-len(bodyAfterReceived(t, m.Data))])
	for _, want := range []string{"with ESMTPSA", tlsVersionWord(st.Version), tls.CipherSuiteName(st.CipherSuite), "by mail.example.org"} {
		if !strings.Contains(hdr, want) {
			t.Errorf("Received header lacks %q:\n%s", want, hdr)
		}
	}
	if got := bodyAfterReceived(t, m.Data); got != "Subject: hi\r\n\r\nHello.\r\n" {
		t.Errorf("body: %q", got)
	}
}

func tlsVersionWord(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "TLSv1.3"
	case tls.VersionTLS12:
		return "TLSv1.2"
	}
	return tls.VersionName(v)
}

// STARTTLS without AUTH: the Received header says ESMTPS.
func TestReceivedHeaderESMTPS(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lMX, true, false)
	if code, text := c.sendMessage("x@foreign.test", []string{"bob@example.org"}, "Subject: s\r\n\r\nb\r\n"); code != 250 {
		t.Fatalf("%d %s", code, text)
	}
	m := e.be.messages()
	if len(m) != 1 || !strings.Contains(string(m[0].Data), "with ESMTPS\r\n") {
		t.Fatalf("messages: %q", m)
	}
}

func TestAuthLogin(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lSubmission, true, false)
	c.send("AUTH LOGIN")
	if got := c.expect(334); got != b64("Username:") {
		t.Errorf("first challenge %q", got)
	}
	c.send(b64(testUser))
	if got := c.expect(334); got != b64("Password:") {
		t.Errorf("second challenge %q", got)
	}
	c.send(b64(testPass))
	c.expect(235)
	c.cmd("MAIL FROM:<"+testUser+">", 250)
	c.cmd("RCPT TO:<x@foreign.test>", 250)
}

// AUTH LOGIN with the user name as initial response (Outlook, Exchange).
func TestAuthLoginInitialResponse(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lSubmissions, true, false)
	c.send("AUTH LOGIN " + b64(testUser))
	if got := c.expect(334); got != b64("Password:") {
		t.Errorf("challenge %q", got)
	}
	c.send(b64(testPass))
	c.expect(235)
}

func TestAuthLoginWrongPassword(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lSubmissions, true, false)
	c.cmd("AUTH LOGIN", 334)
	c.cmd(b64(testUser), 334)
	c.send(b64("nope"))
	c.expectLine("535 5.7.8 Authentication credentials invalid")
}

// AUTH PLAIN without an initial response: empty 334, then the response.
func TestAuthPlainTwoStep(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lSubmissions, true, false)
	c.send("AUTH PLAIN")
	c.expect(334)
	c.send(plainIR("", testUser, testPass))
	c.expect(235)
}

// Contract: an authorization identity different from the login → 535 5.7.8.
func TestAuthPlainAuthzidMismatch(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lSubmissions, true, false)
	c.send("AUTH PLAIN " + plainIR("bob", testUser, testPass))
	c.expectLine("535 5.7.8 Authentication credentials invalid")
	// Not authenticated afterwards.
	c.cmd("MAIL FROM:<"+testUser+">", 250)
	c.send("RCPT TO:<x@foreign.test>")
	c.expectLine("550 5.7.1 Relaying denied. Authentication required.")
	c.cmd("RSET", 250)
	// The same identity as the login is fine.
	c.cmd("AUTH PLAIN "+plainIR(testUser, testUser, testPass), 235)
}

func TestAuthPlainWrongPassword(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lSubmissions, true, false)
	c.send("AUTH PLAIN " + plainIR("", testUser, "wrong"))
	c.expectLine("535 5.7.8 Authentication credentials invalid")
	c.send("AUTH PLAIN " + plainIR("", "nobody", testPass))
	c.expectLine("535 5.7.8 Authentication credentials invalid")
	// A later correct attempt in the same session still works.
	c.authPlain(testUser, testPass)
}

// Contract: repeated failures from one IP → 421 4.7.0 and disconnect.
func TestAuthThrottle(t *testing.T) {
	e := newEnv(t, nil) // AuthMaxFailures: 3
	c := e.session(t, lSubmissions, true, false)
	c.send("AUTH PLAIN " + plainIR("", testUser, "wrong1"))
	c.expect(535)
	c.send("AUTH PLAIN " + plainIR("", testUser, "wrong2"))
	c.expect(535)
	c.send("AUTH PLAIN " + plainIR("", testUser, "wrong3"))
	text := c.expect(421)
	if !strings.HasPrefix(text, "4.7.0 ") {
		t.Errorf("throttle reply: 421 %s", text)
	}
	c.expectClosed()

	// A new connection from the same IP is refused at AUTH, even with the
	// right password, and closed.
	calls := e.auth.calls.Load()
	c2 := e.session(t, lSubmissions, true, false)
	c2.send("AUTH PLAIN " + plainIR("", testUser, testPass))
	text = c2.expect(421)
	if !strings.HasPrefix(text, "4.7.0 ") {
		t.Errorf("throttle reply: 421 %s", text)
	}
	c2.expectClosed()
	if n := e.auth.calls.Load(); n != calls {
		t.Errorf("authenticator consulted while throttled")
	}
}

// Failed AUTH is delayed (AuthFailDelay), successful AUTH is not.
func TestAuthFailureDelayed(t *testing.T) {
	e := newEnv(t, nil, withLimits(func(l *proxyLimits) { l.AuthFailDelay = 300 * time.Millisecond }))
	c := e.session(t, lSubmissions, true, false)
	start := time.Now()
	c.send("AUTH PLAIN " + plainIR("", testUser, "wrong"))
	c.expect(535)
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("failed AUTH answered after %v, before the configured delay", d)
	}
}

// Contract: AUTH during a transaction, or a second AUTH → 503 5.5.1.
func TestAuthDuringTransactionAndTwice(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lSubmissions, true, false)
	c.cmd("MAIL FROM:<a@b.test>", 250)
	c.send("AUTH PLAIN " + plainIR("", testUser, testPass))
	text := c.expect(503)
	if !strings.HasPrefix(text, "5.5.1 ") {
		t.Errorf("AUTH in transaction: 503 %s", text)
	}
	if n := e.auth.calls.Load(); n != 0 {
		t.Errorf("credentials checked during a transaction")
	}
	c.cmd("RSET", 250)
	c.authPlain(testUser, testPass)
	c.send("AUTH PLAIN " + plainIR("", "bob", "bobpass"))
	text = c.expect(503)
	if !strings.HasPrefix(text, "5.5.1 ") {
		t.Errorf("second AUTH: 503 %s", text)
	}
}

// AUTH sent between BDAT chunks (a transaction is open, Data runs in
// go-smtp's goroutine) must be answered 503, not hang the session.
func TestAuthBetweenBDATChunksDoesNotHang(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lSubmissions, true, false)
	c.cmd("MAIL FROM:<a@b.test>", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.sendRaw("BDAT 12\r\nSubject: x\r\n")
	c.expect(250)
	c.send("AUTH PLAIN " + plainIR("", testUser, testPass))
	code, lines, err := c.reply()
	if err != nil {
		t.Fatalf("AUTH between BDAT chunks: no reply (session deadlocked?): %v", err)
	}
	if code != 503 {
		t.Errorf("AUTH between BDAT chunks: %d %q", code, lines)
	}
}

// Idle past the command timeout: 421 4.4.2 and close.
func TestIdleTimeout(t *testing.T) {
	e := newEnv(t, nil, withLimits(func(l *proxyLimits) { l.CommandTimeout = 200 * time.Millisecond }))
	c := e.dial(t, lSubmission)
	c.ehlo()
	text := c.expect(421)
	if !strings.HasPrefix(text, "4.4.2 ") {
		t.Errorf("idle timeout: 421 %s", text)
	}
	c.expectClosed()
}

// A client that trickles a command without ever ending the line is cut off
// at the command timeout, counted from the start of the line: each byte
// does not buy more time (RFC 5321 4.5.3.2.7 bounds the wait for a command).
func TestTrickledCommandTimesOut(t *testing.T) {
	e := newEnv(t, nil, withLimits(func(l *proxyLimits) { l.CommandTimeout = 300 * time.Millisecond }))
	c := e.dial(t, lMX)
	c.ehlo()
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := c.conn.Write([]byte("N")); err != nil {
				return
			}
		}
	}()
	if out := c.readUntilClosed(); !strings.Contains(out, "421 4.4.2 ") {
		t.Errorf("a trickled command line was closed with %q, want 421 4.4.2", out)
	}
}

// A client that stalls in the STARTTLS handshake is dropped after
// HandshakeTimeout, not after the (longer) command timeout.
func TestSTARTTLSHandshakeTimeout(t *testing.T) {
	e := newEnv(t, nil, withLimits(func(l *proxyLimits) {
		l.HandshakeTimeout = 200 * time.Millisecond
		l.CommandTimeout = 30 * time.Second
	}))
	c := e.dial(t, lSubmission)
	c.ehlo()
	c.cmd("STARTTLS", 220)
	// Say nothing: no ClientHello.
	c.readUntilClosed()
}

// The same for implicit TLS: a client that never sends a ClientHello.
func TestImplicitTLSHandshakeTimeout(t *testing.T) {
	e := newEnv(t, nil, withLimits(func(l *proxyLimits) {
		l.HandshakeTimeout = 200 * time.Millisecond
		l.CommandTimeout = 30 * time.Second
	}))
	pc := e.dialPlainTo(t, e.addr[lSubmissions])
	pc.readUntilClosed()
}

// Contract: HTTP or other non-SMTP bytes → disconnect.
func TestHTTPClientDisconnected(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(t, lMX)
	c.sendRaw("GET / HTTP/1.1\r\nHost: mail.example.org\r\n\r\n")
	out := c.readUntilClosed()
	if strings.Contains(out, "250") {
		t.Errorf("HTTP request got %q", out)
	}
}

// A malformed PLAIN payload is a failed login (535 5.7.8, counted towards
// throttling), never go-smtp's temporary 454 with the SASL library's text.
func TestAuthPlainMalformedIsAFailedLogin(t *testing.T) {
	e := newEnv(t, nil) // AuthMaxFailures: 3
	c := e.session(t, lSubmissions, true, false)
	c.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte(testUser+testPass)))
	c.expectLine("535 5.7.8 Authentication credentials invalid")
	c.send("AUTH PLAIN =")
	c.expectLine("535 5.7.8 Authentication credentials invalid")
	c.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+testUser+"\x00"+testPass+"\x00x")))
	text := c.expect(421) // the third failure from this IP
	if !strings.HasPrefix(text, "4.7.0 ") {
		t.Errorf("throttle reply: 421 %s", text)
	}
	c.expectClosed()
}
