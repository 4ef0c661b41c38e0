package e2e

// DSN backscatter (RFC 3461): a client that is not logged in forges a
// foreign sender and asks for a success report on a message to a local
// mailbox; a backend that honours the request mails the report, carrying
// the client's headers, to the forged sender: spam or phishing from the
// backend's own MAILER-DAEMON.
// The backend here is Postfix, which offers DSN and sends such reports
// itself; the forged senders are mailboxes it stores, so a report it sends
// can be read.

import (
	"strings"
	"testing"
)

// phish is the attacker's message; its headers are what a success report
// carries to the forged sender.
const phish = "From: Your Bank <security@bank.example>\r\nSubject: Urgent: confirm your account\r\n\r\nhttp://phish.example/login\r\n"

// sendWithDSN sends one message with RET on MAIL and NOTIFY on RCPT.
func sendWithDSN(t *testing.T, c *smtpConn, from, ret, to, notify, msg string) {
	t.Helper()
	c.cmd("MAIL FROM:<"+from+"> RET="+ret).expect(t, 250)
	c.cmd("RCPT TO:<"+to+"> NOTIFY="+notify).expect(t, 250)
	c.cmd("DATA").expect(t, 354)
	c.send(msg + ".\r\n")
	c.read().expect(t, 250)
	c.cmd("QUIT").expect(t, 221)
}

// With the default dsn: authenticated, the attack gets no report to the
// forged sender (the backend receives NOTIFY=NEVER), while a logged-in
// user and a trusted network still get theirs. The same attack through a
// tlsguard with dsn: all, in front of the same Postfix, is the control: the
// report arrives, with the attacker's headers in it, so the absence of the
// first is not an accident of the setup.
func TestHardeningDSNBackscatter(t *testing.T) {
	t.Parallel()
	const app = "app@example.org" // a sender on the trusted network
	pf := startPostfix(t, append([]string{
		"virtual_mailbox_maps = texthash:${config_directory}/vmailbox, inline:{ {" + app + " = example.org/app/} }",
	}, postfixVerbose...)...)
	g := startTLSGuard(t, pf, withTrustedNetworks("127.0.0.2/32"))
	open := startTLSGuard(t, pf, withConfig("dsn: all\n"))

	// The attack, on the MX listener, from 127.0.0.1 (neither logged in nor
	// trusted), in plaintext as a spambot would.
	c := dialSMTP(t, g.MX)
	if _, ok := c.ehlo("bot.example.net").extension("DSN"); !ok {
		t.Fatal("tlsguard does not advertise the backend's DSN: a logged-in user could not ask for reports")
	}
	sendWithDSN(t, c, carol, "FULL", victim, "SUCCESS", phish)

	// The control, through dsn: all, with dave as the forged sender.
	c = dialSMTP(t, open.MX)
	c.ehlo("bot.example.net")
	sendWithDSN(t, c, dave, "FULL", "postmaster@example.org", "SUCCESS", phish)

	// A logged-in user asks for a report on her own message.
	a := dialImplicitTLS(t, g.Submissions, g.PKI.clientTLS())
	a.ehlo("client.example.net")
	a.authPlain("", aliceUser, alicePass).expectPrefix(t, "235 ")
	sendWithDSN(t, a, alice, "HDRS", bob, "SUCCESS", "Subject: from alice\r\n\r\nhello bob\r\n")

	// An application on the trusted network, without login.
	tr := dialSMTPFrom(t, "127.0.0.2", g.MX)
	tr.ehlo("app.example.org")
	sendWithDSN(t, tr, app, "HDRS", bob, "SUCCESS,FAILURE", "Subject: from the app\r\n\r\nreport\r\n")

	pf.WaitMessages(t, victim, 1)
	pf.WaitMessages(t, "postmaster@example.org", 1)
	pf.WaitMessages(t, bob, 2)
	control := string(pf.WaitMessages(t, dave, 1)[0].Raw)
	for _, want := range []string{"Action: delivered", "From: Your Bank <security@bank.example>", "Subject: Urgent: confirm your account"} {
		if !strings.Contains(control, want) {
			t.Errorf("control (dsn: all): the report to the forged sender lacks %q:\n%s", want, control)
		}
	}
	for _, sender := range []string{alice, app} {
		if r := string(pf.WaitMessages(t, sender, 1)[0].Raw); !strings.Contains(r, "Action: delivered") {
			t.Errorf("%s asked for a success report and got:\n%s", sender, r)
		}
	}
	pf.Settle(t)
	pf.ExpectEmpty(t, carol)

	// What the backend was asked, and what the log says was stripped.
	got := map[string]string{}
	for _, l := range postfixReceived(pf) {
		if f := strings.Fields(l); f[0] == "RCPT" {
			got[f[1]] = strings.Join(f[2:], " ")
		}
	}
	for rcpt, want := range map[string]string{"TO:<" + victim + ">": "NOTIFY=NEVER", "TO:<postmaster@example.org>": "NOTIFY=SUCCESS"} {
		if got[rcpt] != want {
			t.Errorf("backend got RCPT %s %q, want %q", rcpt, got[rcpt], want)
		}
	}
	expectLogLine(t, g, "transaction", `"from":"`+carol+`"`, `"dsn_stripped":["NOTIFY=SUCCESS"]`)
	for _, l := range strings.Split(g.Log(), "\n") {
		if strings.Contains(l, `"dsn_stripped"`) && !strings.Contains(l, `"from":"`+carol+`"`) {
			t.Errorf("a request that was forwarded is logged as stripped: %s", l)
		}
	}
}
