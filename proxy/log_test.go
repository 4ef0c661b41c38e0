package proxy_test

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// everything renders every observed entry (message and all fields) as text.
func everything(logs *observer.ObservedLogs) string {
	var b strings.Builder
	for _, e := range logs.All() {
		b.WriteString(e.Message)
		b.WriteByte(' ')
		enc := zapcore.NewMapObjectEncoder()
		for _, f := range e.Context {
			f.AddTo(enc)
		}
		j, _ := json.Marshal(enc.Fields)
		b.Write(j)
		fmt.Fprintf(&b, " %v\n", enc.Fields)
	}
	return b.String()
}

// Logs never contain a password or an AUTH payload, whatever the mechanism
// and outcome.
func TestLogsNeverContainPassword(t *testing.T) {
	e := newEnv(t, nil)
	const wrong = "Wr0ng-Secret-Guess"
	// Before TLS (refused), PLAIN ok, PLAIN wrong, LOGIN ok, LOGIN wrong, bad authzid.
	c := e.dial(t, lSubmission)
	c.ehlo()
	c.send("AUTH PLAIN " + plainIR("", testUser, testPass))
	c.expectClass(5)
	c.starttls()
	c.ehlo()
	c.send("AUTH PLAIN " + plainIR("", testUser, wrong))
	c.expect(535)
	c.send("AUTH PLAIN " + plainIR("bob", testUser, testPass))
	c.expect(535)
	c.cmd("QUIT", 221)

	c = e.session(t, lSubmissions, true, true)
	code, text := c.sendMessage(testUser, []string{"r@foreign.test"}, "Subject: x\r\n\r\nb\r\n")
	if code != 250 {
		t.Fatalf("%d %s", code, text)
	}
	c.cmd("QUIT", 221)

	c = e.session(t, lSubmissions, true, false)
	c.cmd("AUTH LOGIN", 334)
	c.cmd(b64(testUser), 334)
	c.cmd(b64(testPass), 235)
	c.cmd("QUIT", 221)

	waitFor(t, "session log lines", func() bool { return e.logs.FilterMessage("session").Len() >= 3 })
	all := everything(e.logs)
	secrets := []string{
		testPass, wrong,
		plainIR("", testUser, testPass), plainIR("", testUser, wrong), plainIR("bob", testUser, testPass),
		b64(testPass), b64(wrong),
	}
	for _, s := range secrets {
		if strings.Contains(all, s) {
			t.Errorf("logs contain a secret %q", s)
		}
	}
	if e.logs.FilterMessage("auth failed").Len() < 2 || e.logs.FilterMessage("auth succeeded").Len() < 2 {
		t.Errorf("auth lines missing:\n%s", all)
	}
}

// The per-transaction log line carries the documented fields (README "Log
// fields"): session, listener, client_ip, tls, tls_version, tls_cipher, sni,
// user, from, rcpts, rules, refused, delivered, result, bytes, duration_ms.
func TestTransactionLogFields(t *testing.T) {
	be := newFakeBackend(t, func(fb *fakeBackend) {
		fb.dataReply = &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as 4XyZ"}
	})
	e := newEnv(t, be)
	c := e.session(t, lSubmissions, true, true)
	c.cmd("MAIL FROM:<"+testUser+">", 250)
	c.cmd("RCPT TO:<R@Foreign.Test>", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.send("RCPT TO:<x@-bad-.test>")
	c.expectClass(5)
	c.cmd("DATA", 354)
	body := "Subject: x\r\n\r\nbody\r\n"
	c.sendRaw(body + ".\r\n")
	c.expect(250)
	st := c.conn.(*tls.Conn).ConnectionState()
	c.cmd("QUIT", 221)

	waitFor(t, "transaction line", func() bool { return e.logs.FilterMessage("transaction").Len() == 1 })
	tx := e.logs.FilterMessage("transaction").All()[0]
	f := tx.ContextMap()
	for _, k := range []string{"session", "listener", "client_ip", "tls", "tls_version", "tls_cipher", "sni",
		"user", "from", "rcpts", "rules", "refused", "delivered", "result", "bytes", "duration_ms"} {
		if _, ok := f[k]; !ok {
			t.Errorf("transaction line lacks %q: %v", k, f)
		}
	}
	check := func(k string, want any) {
		t.Helper()
		if got := fmt.Sprint(f[k]); got != fmt.Sprint(want) {
			t.Errorf("%s = %v, want %v", k, got, want)
		}
	}
	check("listener", lSubmissions)
	check("client_ip", "127.0.0.1")
	check("tls", true)
	check("tls_version", tlsVersionWord(st.Version))
	check("tls_cipher", tls.CipherSuiteName(st.CipherSuite))
	check("user", testUser)
	check("from", testUser)
	check("rcpts", []string{"R@foreign.test", "bob@example.org"})
	check("rules", []string{"authenticated", "local_domains"})
	check("delivered", true)
	check("result", "250 2.0.0 Ok: queued as 4XyZ")
	check("bytes", int64(len(body)))
	if s, _ := f["session"].(string); s == "" {
		t.Errorf("empty session id")
	}

	// The session line shares the session id.
	waitFor(t, "session line", func() bool { return e.logs.FilterMessage("session").FilterField(tx.Context[0]).Len() == 1 })
	sess := e.logs.FilterMessage("session").FilterField(tx.Context[0]).All()[0].ContextMap()
	if fmt.Sprint(sess["user"]) != testUser || fmt.Sprint(sess["delivered"]) != "1" || fmt.Sprint(sess["transactions"]) != "1" {
		t.Errorf("session line: %v", sess)
	}
}

// A refused (relay-denied) transaction is logged with the refusal.
func TestTransactionLogRefused(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lMX, false, false)
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	c.send("RCPT TO:<victim@foreign.test>")
	c.expectLine(relayDenied)
	c.cmd("QUIT", 221)
	waitFor(t, "transaction line", func() bool { return e.logs.FilterMessage("transaction").Len() == 1 })
	f := e.logs.FilterMessage("transaction").All()[0].ContextMap()
	if fmt.Sprint(f["delivered"]) != "false" {
		t.Errorf("delivered: %v", f["delivered"])
	}
	ref := fmt.Sprint(f["refused"])
	if !strings.Contains(ref, "victim@foreign.test") || !strings.Contains(ref, "default") || !strings.Contains(ref, "Relaying denied") {
		t.Errorf("refused: %s", ref)
	}
}

// What policy replay needs is in the transaction line: the declared size,
// and per refused recipient the check that refused it and how many
// recipients were accepted before it.
func TestTransactionLogReplayFields(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lMX, false, false)
	c.cmd("MAIL FROM:<x@foreign.test> SIZE=1234", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.send("RCPT TO:<victim@foreign.test>")
	c.expectLine(relayDenied)
	c.send("RCPT TO:<x@-bad-.test>")
	c.expectClass(5)
	c.cmd("QUIT", 221)
	waitFor(t, "transaction line", func() bool { return e.logs.FilterMessage("transaction").Len() == 1 })
	f := e.logs.FilterMessage("transaction").All()[0].ContextMap()
	if fmt.Sprint(f["size"]) != "1234" {
		t.Errorf("size: %v", f["size"])
	}
	ref := fmt.Sprint(f["refused"])
	for _, want := range []string{"before:1 check:rules rcpt:victim@foreign.test reply:" + relayDenied + " rule:default", "check:syntax"} {
		if !strings.Contains(ref, want) {
			t.Errorf("refused %s lacks %q", ref, want)
		}
	}
	if _, ok := f["shadow"]; ok {
		t.Errorf("shadow without shadow rules: %v", f["shadow"])
	}
}
