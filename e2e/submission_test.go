package e2e

// Submission: implicit TLS (465), STARTTLS (587), AUTH only after TLS.

import (
	"crypto/tls"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Outlook-style: TLS from the first byte on 465, AUTH PLAIN, relay to a
// foreign domain. The message reaches Postfix with tlsguard's Received header
// naming ESMTPSA, the TLS version and the cipher, and the end-of-DATA reply
// carries Postfix's queue id.
func TestImplicitTLSAuthPlainRelaysToForeignDomain(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	run := runSwaks(t, g.Submissions, g.PKI, "--tls-on-connect",
		"--auth", "PLAIN", "--auth-user", aliceUser, "--auth-password", alicePass,
		"--from", alice, "--to", carol,
		"--header", "Subject: outlook-style 465", "--body", "relayed over implicit TLS")
	run.expectOK(t)
	if auth := run.replyAfter("AUTH PLAIN"); !strings.HasPrefix(auth, "235 ") {
		t.Errorf("AUTH PLAIN reply %q, want 235", auth)
	}

	m := pf.WaitMessages(t, carol, 1)[0]
	t.Logf("delivered to %s:\n%s", carol, m.Raw)
	if got := m.Header.Get("Subject"); got != "outlook-style 465" {
		t.Errorf("Subject = %q", got)
	}
	if !strings.Contains(string(m.Body), "relayed over implicit TLS") {
		t.Errorf("body = %q", m.Body)
	}
	rcv := tlsguardReceived(t, m)
	expectWord(t, rcv, "ESMTPSA")
	expectTLSVersion(t, rcv)
	if c := swaksCipher(run.out); c != "" && strings.HasPrefix(c, "TLS_") {
		if !strings.Contains(rcv, c) {
			t.Errorf("Received %q does not name the negotiated cipher %s", rcv, c)
		}
	}
	if end, id := run.replyAfter("."), m.QueueID(); id == "" || !strings.Contains(end, id) {
		t.Errorf("end-of-DATA reply %q does not carry Postfix's queue id %q", end, id)
	}
}

// Thunderbird/script-style on 465 with AUTH LOGIN through Python's smtplib.
func TestImplicitTLSAuthLoginWithPython(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	run := runPython(t, g.Submissions, g.PKI, "--tls", "implicit",
		"--user", aliceUser, "--password", alicePass, "--auth", "LOGIN",
		"--mail-from", alice, "--rcpt", dave, "--subject", "python 465 login")
	run.noErrors(t)
	if auth := run.step(t, "auth"); auth.Code != 235 {
		t.Fatalf("AUTH LOGIN: %d %s, want 235", auth.Code, auth.Msg)
	}
	if _, ok := run.step(t, "ehlo").Features["auth"]; !ok {
		t.Errorf("EHLO on the implicit TLS port does not advertise AUTH: %v", run.step(t, "ehlo").Features)
	}
	if d := run.step(t, "data"); d.Code != 250 {
		t.Fatalf("end of DATA: %d %s, want 250", d.Code, d.Msg)
	}
	m := pf.WaitMessages(t, dave, 1)[0]
	if got := m.Header.Get("Subject"); got != "python 465 login" {
		t.Errorf("Subject = %q", got)
	}
	rcv := tlsguardReceived(t, m)
	expectWord(t, rcv, "ESMTPSA")
	expectTLSVersion(t, rcv)
	if tlsStep := run.step(t, "tls"); !strings.Contains(rcv, strings.Replace(tlsStep.Version, "TLSv", "", 1)) {
		t.Errorf("Received %q does not name the TLS version %s the client negotiated", rcv, tlsStep.Version)
	}
}

// The same on the raw protocol, where the exact TLS parameters are known.
func TestImplicitTLSRawSession(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialImplicitTLS(t, g.Submissions, g.PKI.clientTLS())
	st := c.conn.(*tls.Conn).ConnectionState()
	ehlo := c.ehlo("client.example.net")
	expectAuthMechanisms(t, ehlo)
	if _, ok := ehlo.extension("STARTTLS"); ok {
		t.Errorf("STARTTLS advertised on a connection that is already TLS: %q", ehlo.raw)
	}
	c.authPlain("", aliceUser, alicePass).expectPrefix(t, "235 ")
	c.openData(t, alice, carol)
	c.send("Subject: raw 465\r\n\r\nraw implicit TLS\r\n.\r\n")
	end := c.read().expect(t, 250)
	c.cmd("QUIT").expect(t, 221)

	m := pf.WaitMessages(t, carol, 1)[0]
	rcv := tlsguardReceived(t, m)
	expectWord(t, rcv, "ESMTPSA")
	if name := tls.CipherSuiteName(st.CipherSuite); !strings.Contains(rcv, name) {
		t.Errorf("Received %q does not name the cipher %s", rcv, name)
	}
	if v := strings.TrimPrefix(tls.VersionName(st.Version), "TLS "); !strings.Contains(rcv, v) {
		t.Errorf("Received %q does not name the TLS version %s", rcv, v)
	}
	if id := m.QueueID(); id == "" || !strings.Contains(end.text(), id) {
		t.Errorf("end-of-DATA reply %q does not carry Postfix's queue id %q", end.last(), id)
	}

	// One structured line per session and per transaction, with the facts
	// an operator needs (matched by value: the key names are the proxy's).
	expectLogLine(t, g, "transaction", aliceUser, carol, m.QueueID(), "submissions", "127.0.0.1")
	expectLogLine(t, g, "session", aliceUser, "submissions", "127.0.0.1",
		tls.CipherSuiteName(st.CipherSuite), strings.TrimPrefix(tls.VersionName(st.Version), "TLS "))

	// Never a password or an AUTH payload in the log.
	log := g.Log()
	for _, secret := range []string{alicePass, b64(alicePass), b64("\x00" + aliceUser + "\x00" + alicePass)} {
		if strings.Contains(log, secret) {
			t.Errorf("the log contains the secret %q", secret)
		}
	}
}

// TLS 1.2 is the minimum: a TLS 1.1 client fails its handshake.
func TestImplicitTLSRefusesTLS11(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	cfg := g.PKI.clientTLS()
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	conn, err := tls.Dial("tcp", g.Submissions, cfg)
	if err == nil {
		conn.Close()
		t.Fatal("TLS 1.1 handshake succeeded; min_version is 1.2")
	}
}

// 587 (and 25) before STARTTLS: STARTTLS and the basics, never AUTH.
func TestEHLOBeforeSTARTTLSNeverAdvertisesAuth(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	for name, addr := range map[string]string{"submission": g.Submission, "submission-strict": g.Strict, "mx": g.MX} {
		c := dialSMTP(t, addr)
		ehlo := c.ehlo("client.example.net")
		for _, ext := range []string{"STARTTLS", "SIZE", "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"} {
			if _, ok := ehlo.extension(ext); !ok {
				t.Errorf("%s: EHLO before STARTTLS does not advertise %s: %q", name, ext, ehlo.raw)
			}
		}
		if line, ok := ehlo.extension("AUTH"); ok {
			t.Errorf("%s: EHLO before STARTTLS advertises %q", name, line)
		}
		// Only what the whole path can honour: not more than the backend's
		// message_size_limit (10240000, Postfix's default).
		if line, ok := ehlo.extension("SIZE"); ok {
			if f := strings.Fields(line); len(f) == 2 {
				if n, err := strconv.Atoi(f[1]); err != nil || n == 0 || n > 10240000 {
					t.Errorf("%s: %q promises more than the backend's SIZE 10240000", name, line)
				}
			}
		}
		c.cmd("QUIT").expect(t, 221)
	}
}

// AUTH before TLS is refused before any credential is read: the next line
// is a command again, and the session is not authenticated.
func TestAuthBeforeTLSRefused(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.Submission)
	c.ehlo("client.example.net")
	expectTLSRequired(t, c.authPlain("", aliceUser, alicePass))
	c.cmd("NOOP").expect(t, 250)
	expectTLSRequired(t, c.cmd("AUTH LOGIN")) // no 334: no username is read
	c.cmd("NOOP").expect(t, 250)
	c.cmd("MAIL FROM:<"+alice+">").expect(t, 250)
	c.cmd("RCPT TO:<"+carol+">").expectPrefix(t, relayDenied)
}

// After STARTTLS, AUTH (PLAIN and LOGIN) is offered and works.
func TestSTARTTLSThenAuth(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.Submission)
	c.ehlo("client.example.net")
	c.startTLS(g.PKI.clientTLS())
	ehlo := c.ehlo("client.example.net")
	expectAuthMechanisms(t, ehlo)
	if _, ok := ehlo.extension("STARTTLS"); ok {
		t.Errorf("STARTTLS advertised again after STARTTLS: %q", ehlo.raw)
	}
	c.authPlain("", aliceUser, alicePass).expectPrefix(t, "235 ")

	c = dialSMTP(t, g.Submission)
	c.ehlo("client.example.net")
	c.startTLS(g.PKI.clientTLS())
	c.ehlo("client.example.net")
	c.authLogin(bobUser, bobPass).expectPrefix(t, "235 ")
	c.cmd("MAIL FROM:<"+bob+">").expect(t, 250)
	c.cmd("RCPT TO:<"+dave+">").expect(t, 250)
}

// RFC 3207 4.2: after STARTTLS the client must EHLO again; nothing from the
// plaintext phase survives.
func TestSTARTTLSForgetsEarlierState(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.Submission)
	c.ehlo("client.example.net")
	c.startTLS(g.PKI.clientTLS())
	c.cmd("MAIL FROM:<"+alice+">").expectClass(t, 5)
	c.ehlo("client.example.net")
	c.cmd("MAIL FROM:<"+alice+">").expect(t, 250)
}

// STARTTLS with SMTP commands pipelined behind it in the same packet
// (CVE-2011-0411): the plaintext is discarded, never run inside TLS.
func TestSTARTTLSDiscardsPipelinedPlaintext(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.Submission)
	c.ehlo("client.example.net")
	c.send("STARTTLS\r\nMAIL FROM:<" + alice + ">\r\nRCPT TO:<" + alice + ">\r\n")
	c.read().expect(t, 220)
	c.handshake(g.PKI.clientTLS())
	// The first reply inside TLS must answer our EHLO, not the injected MAIL.
	ehlo := c.ehlo("client.example.net")
	if len(ehlo.lines) < 2 {
		t.Fatalf("first reply after the handshake is %q, not an EHLO reply: injected commands ran", ehlo.raw)
	}
	// No MAIL was ever accepted: a bad sequence (RFC 5321 says 503; go-smtp
	// says 502), not 250.
	if r := c.cmd("RCPT TO:<" + alice + ">"); r.code/100 != 5 || r.enhanced() != "5.5.1" {
		t.Errorf("RCPT after the injected MAIL got %q, want 503 5.5.1 (no MAIL in force)", r.raw)
	}
}

// A require_tls listener refuses MAIL until STARTTLS.
func TestRequireTLSRefusesMailBeforeSTARTTLS(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.Strict)
	c.ehlo("client.example.net")
	c.cmd("MAIL FROM:<someone@foreign.test>").expectPrefix(t, "530 5.7.0 ")
	c.startTLS(g.PKI.clientTLS())
	c.ehlo("client.example.net")
	c.cmd("MAIL FROM:<someone@foreign.test>").expect(t, 250)
	c.cmd("RCPT TO:<"+alice+">").expect(t, 250)
}

// tlsguardReceived returns the Received field tlsguard added.
func tlsguardReceived(t testing.TB, m Message) string {
	t.Helper()
	for _, r := range m.Received() {
		if strings.Contains(r, "by "+serverName) {
			return r
		}
	}
	t.Fatalf("no Received header by %s in:\n%s", serverName, m.Raw)
	return ""
}

// expectWord checks an RFC 3848 protocol word in a Received field ("with
// ESMTPSA"), as a whole word.
func expectWord(t testing.TB, received, word string) {
	t.Helper()
	if !regexp.MustCompile(`\bwith ` + word + `\b`).MatchString(received) {
		t.Errorf("Received %q does not say \"with %s\"", received, word)
	}
}

var tlsVersionRE = regexp.MustCompile(`TLS ?v?1\.[23]`)

func expectTLSVersion(t testing.TB, received string) {
	t.Helper()
	if !tlsVersionRE.MatchString(received) {
		t.Errorf("Received %q does not name the TLS version", received)
	}
}

// swaksCipher is the cipher swaks reports ("=== TLS started with cipher
// TLSv1.3:TLS_AES_256_GCM_SHA384:256").
func swaksCipher(out string) string {
	m := regexp.MustCompile(`TLS started with cipher [^:]+:([^:\s]+)`).FindStringSubmatch(out)
	if m == nil {
		return ""
	}
	return m[1]
}

func expectAuthMechanisms(t testing.TB, ehlo reply) {
	t.Helper()
	line, ok := ehlo.extension("AUTH")
	if !ok {
		t.Fatalf("EHLO does not advertise AUTH: %q", ehlo.raw)
	}
	for _, mech := range []string{"PLAIN", "LOGIN"} {
		if !strings.Contains(" "+strings.ToUpper(line)+" ", " "+mech+" ") {
			t.Errorf("AUTH line %q lacks %s", line, mech)
		}
	}
}

// expectTLSRequired accepts the two refusals the contract allows for AUTH
// before TLS.
func expectTLSRequired(t testing.TB, r reply) {
	t.Helper()
	switch {
	case r.code == 530 && r.enhanced() == "5.7.0":
	case r.code == 523 && r.enhanced() == "5.7.10":
	default:
		t.Fatalf("AUTH before TLS got %q, want 530 5.7.0 or 523 5.7.10", r.raw)
	}
}

// The README's row for EHLO before STARTTLS names every extension tlsguard
// advertises there, in front of the test Postfix (which offers SMTPUTF8 and
// DSN), so an operator comparing the two finds nothing missing.
func TestREADMEEHLORowMatchesEHLO(t *testing.T) {
	t.Parallel()
	var row string
	for _, l := range strings.Split(readFile("../README.md"), "\n") {
		if strings.HasPrefix(l, "| EHLO before STARTTLS |") {
			row = l
		}
	}
	if row == "" {
		t.Fatal("README.md: no row for EHLO before STARTTLS")
	}
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)
	c := dialSMTP(t, g.Submission)
	ehlo := c.ehlo("client.example.net")
	for i, l := range ehlo.lines {
		if f := strings.Fields(l); i > 0 && len(f) > 0 && !strings.Contains(row, f[0]) {
			t.Errorf("EHLO advertises %q; the README row does not name %s: %s", l, f[0], row)
		}
	}
	for _, ext := range []string{"SMTPUTF8", "DSN", "LIMITS"} {
		if _, ok := ehlo.extension(ext); !ok {
			t.Errorf("EHLO in front of Postfix lacks %s: %q", ext, ehlo.raw)
		}
	}
}
