package e2e

// The behaviour contract (docs/behaviour.md, README "What a client sees",
// "Log fields" and the first commands of the README), row by row where the
// other e2e files left a gap. Each test names the row it checks. What the
// backend received is read from Postfix itself: with debug_peer_list it logs
// every command line it got ("< peer: MAIL FROM:<...> ..."), and what it
// stored is in its Maildirs.

import (
	"crypto/tls"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

// postfixVerbose makes Postfix log every SMTP line it receives from
// loopback, i.e. from tlsguard.
var postfixVerbose = []string{"debug_peer_list = 127.0.0.1", "debug_peer_level = 2"}

var postfixReceivedRE = regexp.MustCompile(`(?m)\]: < [^ ]+: ((?:MAIL FROM|RCPT TO):.*)$`)

// postfixReceived returns the MAIL and RCPT command lines Postfix received,
// as it logged them, oldest first.
func postfixReceived(pf *Postfix) []string {
	var out []string
	for _, m := range postfixReceivedRE.FindAllStringSubmatch(pf.Log(), -1) {
		out = append(out, strings.TrimSpace(m[1]))
	}
	return out
}

// waitPostfixReceived waits until Postfix logged a received command line
// that starts with prefix, and returns it.
func waitPostfixReceived(t testing.TB, pf *Postfix, prefix string) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, l := range postfixReceived(pf) {
			if strings.HasPrefix(l, prefix) {
				return l
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("postfix logged no received %q within 20s; it logged:\n%s", prefix, strings.Join(postfixReceived(pf), "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Row "MAIL parameters": BODY= reaches the backend as the client declared
// it (RFC 6152 2): BODY=7BIT as BODY=7BIT, BODY=8BITMIME as BODY=8BITMIME,
// and no BODY= as none, although the backend offers 8BITMIME. Read from
// Postfix's own log of the MAIL lines it received.
func TestContractBodyAsDeclaredAtBackend(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t, postfixVerbose...)
	g := startTLSGuard(t, pf)

	declared := map[string]string{"seven@foreign.test": "BODY=7BIT", "eight@foreign.test": "BODY=8BITMIME", "plain@foreign.test": ""}
	for from, body := range declared {
		c := dialSMTP(t, g.MX)
		c.ehlo("client.example.net")
		c.cmd(strings.TrimSpace("MAIL FROM:<"+from+"> "+body)).expect(t, 250)
		c.cmd("RCPT TO:<"+alice+">").expect(t, 250)
		c.cmd("DATA").expect(t, 354)
		c.send("Subject: " + from + "\r\n\r\nbody\r\n.\r\n")
		c.read().expect(t, 250)
		c.cmd("QUIT").expect(t, 221)
	}
	for from, body := range declared {
		mail := waitPostfixReceived(t, pf, "MAIL FROM:<"+from+">")
		got := ""
		for _, f := range strings.Fields(mail) {
			if strings.HasPrefix(strings.ToUpper(f), "BODY=") {
				got = strings.ToUpper(f)
			}
		}
		if got != body {
			t.Errorf("client declared %q, the backend got %q", body, mail)
		}
	}
	pf.WaitMessages(t, alice, len(declared))
}

// A backend that does not offer 8BITMIME still gets a message its client
// declared 8-bit, without the BODY= it cannot take (tlsguard offers 8BITMIME
// whatever the backend does, and cannot convert the message).
func TestContractBody8BitToBackendWithout8BitMIME(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t, append([]string{"smtpd_discard_ehlo_keywords = 8bitmime"}, postfixVerbose...)...)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.cmd("MAIL FROM:<eight@foreign.test> BODY=8BITMIME").expect(t, 250)
	c.cmd("RCPT TO:<"+alice+">").expect(t, 250)
	c.cmd("DATA").expect(t, 354)
	c.send("Subject: 8-bit\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGr\xc3\xbc\xc3\x9fe\r\n.\r\n")
	c.read().expect(t, 250)
	c.cmd("QUIT").expect(t, 221)
	if mail := waitPostfixReceived(t, pf, "MAIL FROM:<eight@foreign.test>"); strings.Contains(strings.ToUpper(mail), "BODY=") {
		t.Errorf("a backend without 8BITMIME got %q", mail)
	}
	pf.WaitMessages(t, alice, 1)
}

// Row "MAIL parameters (AUTH=, SIZE=, BODY=, DSN's RET/ENVID/ORCPT/NOTIFY):
// validated; an unauthenticated client's AUTH= is dropped; none is forwarded
// as raw text". The backend here offers AUTH (SASL through a private
// Dovecot), DSN and SMTPUTF8, so a client's AUTH= would go through if
// tlsguard passed it on (go-smtp's client keeps AUTH= for a backend that
// offers AUTH). DSN parameters, which the backend offered, reach it in
// canonical form and take effect: Postfix sends the sender the success
// notification the client asked for, with its ENVID and ORCPT. (With
// dsn: all: by default an unauthenticated client's NOTIFY=SUCCESS is not
// forwarded, TestHardeningDSNBackscatter.)
func TestContractMailParamsSanitisedAtBackend(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	dv := auditStartDovecot(t, auditNewPKI(t, dir, "mail.audit.test", auditDovecotHost), auditDovecotOptions{})
	pf := startPostfix(t, append([]string{
		"smtpd_sasl_auth_enable = yes",
		"smtpd_sasl_type = dovecot",
		"smtpd_sasl_path = " + dv.AuthSocket,
	}, postfixVerbose...)...)
	// The control: the backend does offer AUTH, so AUTH= would be kept.
	direct := dialSMTP(t, pf.Addr)
	if _, ok := direct.ehlo("control.example.net").extension("AUTH"); !ok {
		t.Fatalf("control: the backend does not offer AUTH; the AUTH= check below would prove nothing")
	}
	direct.cmd("QUIT").expect(t, 221)
	g := startTLSGuard(t, pf, withConfig("dsn: all\n"))

	// Unauthenticated, MX role, inside TLS: AUTH= claims the CEO, the other
	// parameters are spelled in odd but valid ways.
	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.startTLS(g.PKI.clientTLS())
	ehlo := c.ehlo("client.example.net")
	if _, ok := ehlo.extension("DSN"); !ok {
		t.Fatalf("the backend offers DSN but tlsguard does not advertise it: %q", ehlo.raw)
	}
	c.cmd("MAIL FROM:<"+carol+"> AUTH=ceo@example.org size=0300 body=8bitmime ret=hdrs ENVID=contract+2Benvid").expect(t, 250)
	c.cmd("RCPT TO:<"+alice+"> notify=success,failure ORCPT=rfc822;Alice+40Example.org").expect(t, 250)
	c.cmd("DATA").expect(t, 354)
	c.send("Subject: dsn contract\r\nMessage-ID: <dsn-contract@client.example.net>\r\n\r\nbody\r\n.\r\n")
	c.read().expect(t, 250)
	c.cmd("QUIT").expect(t, 221)

	// Authenticated alice on 465 claims bob with AUTH=.
	a := dialImplicitTLS(t, g.Submissions, g.PKI.clientTLS())
	a.ehlo("client.example.net")
	a.authPlain("", aliceUser, alicePass).expectPrefix(t, "235 ")
	a.cmd("MAIL FROM:<"+alice+"> AUTH="+bob).expect(t, 250)
	a.cmd("RCPT TO:<"+dave+">").expect(t, 250)
	a.cmd("DATA").expect(t, 354)
	a.send("Subject: auth= from a logged-in user\r\n\r\nbody\r\n.\r\n")
	a.read().expect(t, 250)
	a.cmd("QUIT").expect(t, 221)

	mail := waitPostfixReceived(t, pf, "MAIL FROM:<"+carol+">")
	rcpt := waitPostfixReceived(t, pf, "RCPT TO:<"+alice+">")
	waitPostfixReceived(t, pf, "MAIL FROM:<"+alice+">")
	for _, want := range []string{"SIZE=300", "BODY=8BITMIME", "RET=HDRS", "ENVID=contract+2Benvid"} {
		if !strings.Contains(" "+mail+" ", " "+want+" ") {
			t.Errorf("backend got %q: lacks %s (the validated, canonical form)", mail, want)
		}
	}
	for _, want := range []string{"NOTIFY=SUCCESS,FAILURE", "ORCPT=RFC822;Alice@Example.org"} {
		if !strings.Contains(" "+rcpt+" ", " "+want+" ") {
			t.Errorf("backend got %q: lacks %s", rcpt, want)
		}
	}
	for _, l := range postfixReceived(pf) {
		if strings.Contains(strings.ToUpper(l), "AUTH=") && !strings.Contains(l, "AUTH=<>") {
			t.Errorf("the client's AUTH= reached the backend: %q", l)
		}
		for _, raw := range []string{"size=0300", "body=8bitmime", "ret=hdrs", "notify=success"} {
			if strings.Contains(l, raw) {
				t.Errorf("the client's raw parameter %s reached the backend: %q", raw, l)
			}
		}
	}
	if log := pf.Log(); strings.Contains(log, "sasl_sender=") {
		t.Errorf("the backend took an AUTH= sender from tlsguard:\n%s", log)
	}

	// The DSN parameters took effect: the success notification Postfix sent
	// to carol names the ENVID and the original recipient, and returns only
	// the headers (RET=HDRS).
	pf.WaitMessages(t, alice, 1)
	pf.WaitMessages(t, dave, 1)
	dsn := pf.WaitMessages(t, carol, 1)[0]
	raw := string(dsn.Raw)
	for _, want := range []string{"Original-Envelope-Id: contract+envid", "Original-Recipient: RFC822;Alice@Example.org",
		"Action: delivered", "text/rfc822-headers", "Subject: dsn contract"} {
		if !strings.Contains(raw, want) {
			t.Errorf("the delivery notification lacks %q:\n%s", want, raw)
		}
	}
	if strings.Contains(raw, "\nbody\n") {
		t.Errorf("RET=HDRS: the notification returned the whole message:\n%s", raw)
	}
}

// Rows "SMTPUTF8 and DSN only if the backend offered them", "REQUIRETLS only
// with a TLS backend leg", for parameters rather than EHLO keywords (which
// TestExtensionsFollowBackend checks): a client that sends them anyway is
// refused by tlsguard, and the backend never receives them.
func TestContractUnofferedParamsNeverReachBackend(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t, append([]string{"smtputf8_enable = no", "smtpd_discard_ehlo_keywords = dsn"}, postfixVerbose...)...)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.startTLS(g.PKI.clientTLS())
	c.ehlo("client.example.net")
	for _, bad := range []string{"RET=FULL", "ENVID=contract-envid", "SMTPUTF8", "REQUIRETLS"} {
		if r := c.cmd("MAIL FROM:<" + carol + "> " + bad); r.code/100 != 5 {
			t.Errorf("MAIL with %s, not offered, got %q; want a 5xx", bad, r.raw)
			c.cmd("RSET").expect(t, 250)
		}
	}
	c.cmd("MAIL FROM:<jörg@foreign.test>").expectPrefix(t, "553 5.6.7 ")
	c.cmd("MAIL FROM:<"+carol+">").expect(t, 250)
	for _, bad := range []string{"NOTIFY=SUCCESS", "ORCPT=rfc822;alice@example.org"} {
		if r := c.cmd("RCPT TO:<" + alice + "> " + bad); r.code/100 != 5 {
			t.Errorf("RCPT with %s, not offered, got %q; want a 5xx", bad, r.raw)
		}
	}
	c.cmd("RCPT TO:<"+alice+">").expect(t, 250)
	c.cmd("DATA").expect(t, 354)
	c.send("Subject: no dsn\r\n\r\nbody\r\n.\r\n")
	c.read().expect(t, 250)
	c.cmd("QUIT").expect(t, 221)

	pf.WaitMessages(t, alice, 1)
	waitPostfixReceived(t, pf, "RCPT TO:<"+alice+">")
	for _, l := range postfixReceived(pf) {
		for _, p := range []string{"RET=", "ENVID=", "SMTPUTF8", "REQUIRETLS", "NOTIFY=", "ORCPT="} {
			if strings.Contains(strings.ToUpper(l), p) {
				t.Errorf("the backend, which did not offer it, received %s: %q", p, l)
			}
		}
	}
	pf.Settle(t)
	if n := len(pf.Messages(t, carol)); n != 0 {
		t.Errorf("carol got %d notification(s): a DSN request reached the backend", n)
	}
}

// Rows "SMTPUTF8 ... only if the backend offered them" (positive), "EHLO
// before STARTTLS" (README's list, CHUNKING included), "REQUIRETLS only with
// a TLS backend leg", "NUL refused with 554 5.6.0": a message with a UTF-8
// local part and domain passes through a Postfix that supports SMTPUTF8 and
// is stored; the domain is forwarded in its canonical A-label form.
func TestContractSMTPUTF8MessageStored(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t, append([]string{
		"smtputf8_enable = yes",
		"virtual_mailbox_maps = texthash:${config_directory}/vmailbox, inline:{ {jörg@example.org = example.org/joerg/} }",
	}, postfixVerbose...)...)
	g := startTLSGuard(t, pf)

	for name, addr := range map[string]string{"submission": g.Submission, "mx": g.MX} {
		c := dialSMTP(t, addr)
		ehlo := c.ehlo("client.example.net")
		for _, ext := range []string{"STARTTLS", "SIZE", "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "CHUNKING", "SMTPUTF8", "DSN"} {
			if _, ok := ehlo.extension(ext); !ok {
				t.Errorf("%s: EHLO before STARTTLS lacks %s: %q", name, ext, ehlo.raw)
			}
		}
		c.startTLS(g.PKI.clientTLS())
		for phase, r := range map[string]reply{"before STARTTLS": ehlo, "after STARTTLS": c.ehlo("client.example.net")} {
			if line, ok := r.extension("REQUIRETLS"); ok {
				t.Errorf("%s %s: advertises %q over a plaintext backend leg", name, phase, line)
			}
		}
		c.cmd("QUIT").expect(t, 221)
	}

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.cmd("MAIL FROM:<rené@bücher.example> SMTPUTF8 BODY=8BITMIME").expect(t, 250)
	c.cmd("RCPT TO:<jörg@example.org>").expect(t, 250)
	c.cmd("DATA").expect(t, 354)
	c.send("From: René <rené@bücher.example>\r\nTo: <jörg@example.org>\r\nSubject: grüße\r\n\r\nviele grüße\r\n.\r\n")
	c.read().expect(t, 250)
	// NUL: the exact code of the README's row.
	c.openData(t, carol, alice)
	c.send("Subject: nul\r\n\r\nbefore\x00after\r\n.\r\n")
	c.read().expectPrefix(t, "554 5.6.0 ")
	c.cmd("QUIT").expect(t, 221)

	m := pf.WaitMessages(t, "joerg@example.org", 1)[0]
	if got := string(m.Raw); !strings.Contains(got, "Subject: grüße") || !strings.Contains(got, "viele grüße") {
		t.Errorf("stored message lost its UTF-8:\n%s", got)
	}
	mail := waitPostfixReceived(t, pf, "MAIL FROM:<rené@")
	if !strings.HasPrefix(mail, "MAIL FROM:<rené@xn--bcher-kva.example>") || !strings.Contains(mail, " SMTPUTF8") {
		t.Errorf("backend got %q, want the UTF-8 local part, the A-label domain and SMTPUTF8", mail)
	}
	if rcpt := waitPostfixReceived(t, pf, "RCPT TO:<j"); rcpt != "RCPT TO:<jörg@example.org>" {
		t.Errorf("backend got %q, want RCPT TO:<jörg@example.org>", rcpt)
	}
	pf.Settle(t)
	pf.ExpectEmpty(t, alice)
}

// Row "a failed STARTTLS handshake: the connection is closed" on the 587
// role: after the 220, bytes that are not a ClientHello (a client that
// ignores the 220), or a ClientHello below the minimum version, end the
// connection with no SMTP reply in clear.
func TestContractFailedSTARTTLSHandshakeCloses(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.Submission)
	c.ehlo("client.example.net")
	c.cmd("STARTTLS").expect(t, 220)
	c.send("EHLO client.example.net\r\nMAIL FROM:<" + alice + ">\r\n")
	got, closed := c.readUntilClosed(15 * time.Second)
	if !closed {
		t.Errorf("plaintext after 220 to STARTTLS: connection still open, got %q", got)
	}
	for _, l := range got {
		if len(l) >= 3 && l[0] >= '2' && l[0] <= '5' && l[1] >= '0' && l[1] <= '9' {
			t.Errorf("SMTP reply %q in clear after a failed handshake", l)
		}
	}

	c = dialSMTP(t, g.Submission)
	c.ehlo("client.example.net")
	c.cmd("STARTTLS").expect(t, 220)
	cfg := g.PKI.clientTLS()
	cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	tc := tls.Client(c.conn, cfg)
	tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err == nil {
		t.Fatal("a TLS 1.1 handshake after STARTTLS succeeded; min_version is 1.2")
	}
	c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	if _, err := c.conn.Read(make([]byte, 1)); err == nil {
		// The alert may be followed by nothing but the close.
		if _, err := c.conn.Read(make([]byte, 64)); err == nil {
			t.Errorf("connection still open after a failed STARTTLS handshake")
		}
	}
}

// logRecord is one JSON log line.
type logRecord map[string]any

// logRecords parses every JSON line of tlsguard's whole log.
func logRecords(t testing.TB, g *TLSGuard) []logRecord {
	t.Helper()
	var out []logRecord
	for _, line := range strings.Split(readFile(g.LogFile), "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var r logRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Errorf("log line is not JSON (log.format json): %q", line)
			continue
		}
		out = append(out, r)
	}
	return out
}

// waitLogRecord waits for a line with msg for which match is true.
func waitLogRecord(t testing.TB, g *TLSGuard, msg string, match func(logRecord) bool) logRecord {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, r := range logRecords(t, g) {
			if r["msg"] == msg && match(r) {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no matching %q log line within 10s; log:\n%s", msg, g.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// expectFields fails for each documented key the line lacks.
func expectFields(t testing.TB, r logRecord, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if _, ok := r[k]; !ok {
			t.Errorf("%q line lacks the documented field %q: %v", r["msg"], k, r)
		}
	}
}

func fieldIs(r logRecord, key string, want any) bool {
	got, ok := r[key]
	return ok && got == want
}

var (
	sessionLogFields     = []string{"session", "listener", "client_ip", "helo", "tls_version", "tls_cipher", "sni", "user", "transactions", "delivered", "bytes_in", "bytes_out", "end", "duration_ms"}
	transactionLogFields = []string{"session", "listener", "client_ip", "tls", "user", "from", "rcpts", "rules", "refused", "delivered", "result", "bytes", "duration_ms"}
	transactionTLSFields = []string{"tls_version", "tls_cipher", "sni"}
)

// README "Log fields": the session and transaction lines carry every
// documented field with the values of what happened; auth, backend and
// listener events have their lines; and no password or AUTH payload appears
// anywhere in the log after PLAIN and LOGIN logins, good and bad.
func TestContractLogFields(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  auth_fail_delay: 100ms\n"))
	const wrongPass = "wrong-secret-9"

	// bob: STARTTLS on 587, AUTH LOGIN, one recipient refused by the
	// backend, one relayed.
	c := dialSMTP(t, g.Submission)
	c.ehlo("client.example.net")
	st := c.startTLS(g.PKI.clientTLS())
	c.ehlo("client.example.net")
	c.authLogin(bobUser, bobPass).expectPrefix(t, "235 ")
	c.cmd("MAIL FROM:<"+bob+">").expect(t, 250)
	c.cmd("RCPT TO:<nobody@example.org>").expectPrefix(t, "550 5.1.1 ")
	c.cmd("RCPT TO:<"+dave+">").expect(t, 250)
	c.cmd("DATA").expect(t, 354)
	c.send("Subject: log fields\r\n\r\nbody\r\n.\r\n")
	end := c.read().expect(t, 250)
	c.cmd("QUIT").expect(t, 221)

	// alice on 465: a wrong password with LOGIN, then PLAIN with and without
	// an authorization identity (one per session: a second AUTH is 503).
	a := dialImplicitTLS(t, g.Submissions, g.PKI.clientTLS())
	a.ehlo("client.example.net")
	a.authLogin(aliceUser, wrongPass).expectPrefix(t, "535 5.7.8 ")
	a.authPlain("", aliceUser, wrongPass).expectPrefix(t, "535 5.7.8 ")
	a.authPlain(aliceUser, aliceUser, alicePass).expectPrefix(t, "235 ")
	a.cmd("QUIT").expect(t, 221)
	a = dialImplicitTLS(t, g.Submissions, g.PKI.clientTLS())
	a.ehlo("client.example.net")
	a.authPlain("", aliceUser, alicePass).expectPrefix(t, "235 ")
	a.cmd("QUIT").expect(t, 221)

	// An unauthenticated relay attempt in plaintext on the MX role.
	m := dialSMTP(t, g.MX)
	m.ehlo("plain.example.net")
	m.cmd("MAIL FROM:<someone@foreign.test>").expect(t, 250)
	expectRelayDenied(t, m.cmd("RCPT TO:<"+carol+">"))
	m.cmd("QUIT").expect(t, 221)

	// The session and transaction lines of bob's session.
	tx := waitLogRecord(t, g, "transaction", func(r logRecord) bool { return fieldIs(r, "user", bobUser) })
	expectFields(t, tx, transactionLogFields...)
	expectFields(t, tx, transactionTLSFields...)
	sess := waitLogRecord(t, g, "session", func(r logRecord) bool { return fieldIs(r, "user", bobUser) })
	expectFields(t, sess, sessionLogFields...)
	if tx["session"] != sess["session"] || sess["session"] == "" {
		t.Errorf("transaction session %v, session line %v: want the same id", tx["session"], sess["session"])
	}
	cipher := tls.CipherSuiteName(st.CipherSuite)
	version := "TLSv" + strings.TrimPrefix(tls.VersionName(st.Version), "TLS ")
	for _, r := range []logRecord{tx, sess} {
		for k, want := range map[string]any{"listener": "submission", "client_ip": "127.0.0.1",
			"tls_version": version, "tls_cipher": cipher, "sni": serverName} {
			if !fieldIs(r, k, want) {
				t.Errorf("%s line: %s = %v, want %v", r["msg"], k, r[k], want)
			}
		}
	}
	for k, want := range map[string]any{"helo": "client.example.net", "transactions": 1.0, "delivered": 1.0, "end": ""} {
		if !fieldIs(sess, k, want) {
			t.Errorf("session line: %s = %v, want %v", k, sess[k], want)
		}
	}
	for _, k := range []string{"bytes_in", "bytes_out", "duration_ms"} {
		if v, _ := sess[k].(float64); v <= 0 {
			t.Errorf("session line: %s = %v, want > 0", k, sess[k])
		}
	}
	if fmtJSON(tx["rcpts"]) != `["`+dave+`"]` || len(asList(tx["rules"])) != 1 {
		t.Errorf("transaction rcpts %v rules %v, want [%s] and its one rule", tx["rcpts"], tx["rules"], dave)
	}
	refused := asList(tx["refused"])
	if len(refused) != 1 {
		t.Errorf("transaction refused = %v, want the one refused recipient", tx["refused"])
	} else {
		r, _ := refused[0].(map[string]any)
		if r["rcpt"] != "nobody@example.org" || r["rule"] == nil || !strings.HasPrefix(fmtString(r["reply"]), "550 5.1.1 ") {
			t.Errorf("refused entry %v, want rcpt, rule and the backend's 550 5.1.1 reply", r)
		}
	}
	if !fieldIs(tx, "from", bob) || !fieldIs(tx, "tls", true) || !fieldIs(tx, "delivered", true) || !fieldIs(tx, "result", end.last()) {
		t.Errorf("transaction from %v tls %v delivered %v result %v; want %s, true, true, %q", tx["from"], tx["tls"], tx["delivered"], tx["result"], bob, end.last())
	}
	if v, _ := tx["bytes"].(float64); v <= 0 {
		t.Errorf("transaction bytes = %v, want > 0", tx["bytes"])
	}

	// The plaintext relay attempt: the refusal with its rule and reply.
	ptx := waitLogRecord(t, g, "transaction", func(r logRecord) bool { return fieldIs(r, "from", "someone@foreign.test") })
	expectFields(t, ptx, transactionLogFields...)
	if !fieldIs(ptx, "tls", false) || !fieldIs(ptx, "delivered", false) || !strings.Contains(fmtJSON(ptx["refused"]), `"reply":"`+relayDenied+`"`) {
		t.Errorf("plaintext relay transaction %v: want tls false, delivered false, the refusal with its whole reply %q", ptx, relayDenied)
	}
	psess := waitLogRecord(t, g, "session", func(r logRecord) bool { return fieldIs(r, "helo", "plain.example.net") })
	expectFields(t, psess, sessionLogFields...)

	// Auth lines.
	ok := waitLogRecord(t, g, "auth succeeded", func(r logRecord) bool { return fieldIs(r, "user", bobUser) })
	expectFields(t, ok, "user", "mechanism")
	if !fieldIs(ok, "mechanism", "LOGIN") {
		t.Errorf("auth succeeded mechanism = %v, want LOGIN", ok["mechanism"])
	}
	bad := waitLogRecord(t, g, "auth failed", func(r logRecord) bool { return fieldIs(r, "user", aliceUser) })
	expectFields(t, bad, "user", "mechanism", "reason", "throttled")
	for _, l := range []string{"submissions", "submission", "submission-strict", "mx"} {
		waitLogRecord(t, g, "listening", func(r logRecord) bool { return fieldIs(r, "listener", l) })
	}

	// The backend goes away: its line names the session.
	pf.Stop(t)
	m = dialSMTP(t, g.MX)
	m.ehlo("client.example.net")
	expectBackendTempfail(t, tryTransaction(t, m, "someone@foreign.test", alice, "Subject: backend gone\r\n\r\nbody\r\n"))
	down := waitLogRecord(t, g, "backend unreachable", func(logRecord) bool { return true })
	expectFields(t, down, "session")

	// Every line has the common keys.
	for _, r := range logRecords(t, g) {
		expectFields(t, r, "ts", "level", "logger", "msg")
	}

	// No password, no AUTH payload, anywhere in the whole log.
	log := readFile(g.LogFile)
	secrets := []string{alicePass, bobPass, wrongPass, b64(alicePass), b64(bobPass), b64(wrongPass),
		b64("\x00" + aliceUser + "\x00" + alicePass), b64(aliceUser + "\x00" + aliceUser + "\x00" + alicePass),
		b64("\x00" + aliceUser + "\x00" + wrongPass)}
	for _, s := range secrets {
		if strings.Contains(log, s) {
			t.Errorf("the log contains the secret %q", s)
		}
	}
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

func fmtJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func fmtString(v any) string {
	s, _ := v.(string)
	return s
}

// Rows "any internal error: a safe reply that leaks no internal detail" and
// "bad credentials: 535 5.7.8", for the SASL layer: a PLAIN payload that
// decodes but is not authzid NUL user NUL password is refused permanently
// (RFC 4954 4: 501 5.5.2, or 535 5.7.8), and the reply never carries the
// SASL library's own error text; a response that is not base64 gets 501
// 5.5.2. (An internal error that reaches
// session.reply, the 451 4.3.0 boundary, cannot be caused from outside:
// every error path of the real binary already yields an *smtp.SMTPError.)
func TestContractMalformedSASLRepliesSafely(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialImplicitTLS(t, g.Submissions, g.PKI.clientTLS())
	c.ehlo("client.example.net")
	for name, payload := range map[string]string{
		"no NUL":        b64(aliceUser + alicePass),
		"four fields":   b64("\x00" + aliceUser + "\x00" + alicePass + "\x00x"),
		"empty (\"=\")": "=",
	} {
		r := c.cmd("AUTH PLAIN " + payload)
		if (r.code != 501 && r.code != 535) || strings.Contains(strings.ToLower(r.raw), "sasl") {
			t.Errorf("malformed PLAIN (%s) got %q; want 501 5.5.2 or 535 5.7.8 without the SASL library's text", name, r.raw)
		}
	}
	// A response that is not base64 at all, as the initial response and
	// as the answer to a challenge: RFC 4954 4 says 501 5.5.2, not the
	// temporary 454 4.7.0 that upstream go-smtp sends (go-smtp patch 9).
	c.cmd("AUTH PLAIN !!!notbase64!!!").expectPrefix(t, "501 5.5.2 ")
	c.cmd("AUTH PLAIN").expect(t, 334)
	c.cmd("%%%").expectPrefix(t, "501 5.5.2 ")
	c.cmd("AUTH LOGIN").expect(t, 334)
	c.cmd(b64(aliceUser)).expect(t, 334)
	c.cmd("not base64!").expectPrefix(t, "501 5.5.2 ")
	c.authPlain("", aliceUser, alicePass).expectPrefix(t, "235 ")
}
