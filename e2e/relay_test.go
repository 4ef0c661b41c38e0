package e2e

// The relay policy: local_domains from anyone, trusted_networks and
// authenticated users may relay, everyone else gets the exact 550.

import (
	"strings"
	"testing"
)

// Unauthenticated relaying is refused with the exact text, on every
// listener, with or without TLS, and on every RCPT (not only the first).
func TestUnauthenticatedRelayDenied(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	plain := dialSMTP(t, g.Submission)
	plain.ehlo("client.example.net")
	plain.cmd("MAIL FROM:<someone@foreign.test>").expect(t, 250)
	expectRelayDenied(t, plain.cmd("RCPT TO:<"+carol+">"))
	plain.cmd("QUIT").expect(t, 221)

	for name, addr := range map[string]string{"submission": g.Submission, "mx": g.MX} {
		c := dialSMTP(t, addr)
		c.ehlo("client.example.net")
		c.startTLS(g.PKI.clientTLS())
		c.ehlo("client.example.net")
		c.cmd("MAIL FROM:<someone@foreign.test>").expect(t, 250)
		c.cmd("RCPT TO:<"+alice+">").expect(t, 250)
		t.Logf("%s: second RCPT, to a foreign domain", name)
		expectRelayDenied(t, c.cmd("RCPT TO:<"+carol+">"))
		expectRelayDenied(t, c.cmd("RCPT TO:<"+dave+">"))
		c.cmd("QUIT").expect(t, 221)
	}

	run := runSwaks(t, g.MX, g.PKI, "--tls", "--from", "someone@foreign.test", "--to", carol)
	if got := run.replyAfter("RCPT TO:<" + carol + ">"); got != relayDenied {
		t.Errorf("swaks RCPT reply %q, want %q", got, relayDenied)
	}
	py := runPython(t, g.Submission, g.PKI, "--tls", "starttls", "--mail-from", "someone@foreign.test", "--rcpt", dave)
	if r := py.step(t, "rcpt"); r.Code != 550 || r.Msg != strings.TrimPrefix(relayDenied, "550 ") {
		t.Errorf("smtplib RCPT reply %d %q, want %q", r.Code, r.Msg, relayDenied)
	}

	pf.Settle(t)
	pf.ExpectEmpty(t, carol, dave, alice)
}

// Mail to a local domain needs no AUTH: an MX-style delivery with STARTTLS,
// and a plaintext one from smtplib.
func TestLocalDeliveryWithoutAuth(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	run := runSwaks(t, g.MX, g.PKI, "--tls", "--from", "someone@foreign.test", "--to", alice,
		"--header", "Subject: inbound over STARTTLS")
	run.expectOK(t)
	m := pf.WaitMessages(t, alice, 1)[0]
	rcv := tlsguardReceived(t, m)
	expectWord(t, rcv, "ESMTPS")
	expectTLSVersion(t, rcv)

	py := runPython(t, g.Submission, g.PKI, "--tls", "none", "--mail-from", "someone@foreign.test",
		"--rcpt", bob, "--subject", "inbound in plaintext")
	py.noErrors(t)
	if d := py.step(t, "data"); d.Code != 250 {
		t.Fatalf("end of DATA: %d %s", d.Code, d.Msg)
	}
	m = pf.WaitMessages(t, bob, 1)[0]
	expectWord(t, tlsguardReceived(t, m), "ESMTP")
}

// A client in trusted_networks relays without AUTH.
func TestTrustedNetworkRelaysWithoutAuth(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withTrustedNetworks("127.0.0.0/8"))

	run := runSwaks(t, g.MX, g.PKI, "--tls", "--from", "app@example.org", "--to", carol,
		"--header", "Subject: from a trusted network")
	run.expectOK(t)
	m := pf.WaitMessages(t, carol, 1)[0]
	expectWord(t, tlsguardReceived(t, m), "ESMTPS")

	c := dialSMTP(t, g.Submission) // plaintext, no AUTH
	c.ehlo("client.example.net")
	c.cmd("MAIL FROM:<app@example.org>").expect(t, 250)
	c.cmd("RCPT TO:<"+dave+">").expect(t, 250)
}

// trusted_networks that do not include the client change nothing.
func TestUntrustedNetworkRelayDenied(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withTrustedNetworks("10.0.0.0/8", "127.0.0.2/32", "::1/128"))

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.cmd("MAIL FROM:<app@example.org>").expect(t, 250)
	expectRelayDenied(t, c.cmd("RCPT TO:<"+carol+">"))
}

// Address tricks never turn a foreign recipient into a local one for an
// unauthenticated client, and the backend never sees them. Mixed case still
// matches the local domain.
func TestRelayTricksRefusedForUnauthenticated(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	tricks := []struct{ name, rcpt, marker string }{
		{"percent hack", "<carol%foreign.test@example.org>", "carol%foreign.test"},
		{"bang path", "<foreign.test!carol@example.org>", "foreign.test!carol"},
		{"quoted local part with @", `<"carol@foreign.test"@example.org>`, `"carol@foreign.test"`},
		{"source route", "<@example.org:carol@foreign.test>", "@example.org:carol"},
		{"two @", "<carol@foreign.test@example.org>", "carol@foreign.test@example.org"},
		{"IP literal", "<carol@[127.0.0.1]>", "carol@[127.0.0.1]"},
	}
	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.startTLS(g.PKI.clientTLS())
	c.ehlo("client.example.net")
	c.cmd("MAIL FROM:<someone@foreign.test>").expect(t, 250)
	for _, tr := range tricks {
		r := c.cmd("RCPT TO:" + tr.rcpt)
		if r.code/100 != 5 {
			t.Errorf("%s: RCPT TO:%s got %q, want a 5xx refusal", tr.name, tr.rcpt, r.raw)
		}
	}
	c.cmd("RCPT TO:<Alice@EXAMPLE.ORG>").expect(t, 250)
	c.cmd("DATA").expect(t, 354)
	c.send("Subject: tricks\r\n\r\nonly alice may get this\r\n.\r\n")
	c.read().expect(t, 250)
	c.cmd("QUIT").expect(t, 221)

	pf.WaitMessages(t, alice, 1)
	pf.Settle(t)
	pf.ExpectEmpty(t, carol, victim)
	log := pf.Log()
	for _, tr := range tricks {
		if strings.Contains(log, tr.marker) {
			t.Errorf("%s: the backend saw the address (%s in its log)", tr.name, tr.marker)
		}
	}
}

func expectRelayDenied(t testing.TB, r reply) {
	t.Helper()
	if r.raw != relayDenied+"\r\n" {
		t.Errorf("got %q, want exactly %q", r.raw, relayDenied)
	}
}
