package e2e

// SMTP smuggling (SEC Consult, December 2023, and the variants Postfix,
// Sendmail and Exim were then fixed for): every end-of-data look-alike, in
// DATA and in BDAT, in normalize and in reject mode, against a naive Postfix
// that takes a bare LF as a line end. TestSMTPSmugglingBlocked has the first
// four DATA variants in normalize mode; this is the full list.

import (
	"fmt"
	"strings"
	"testing"
)

// smugglingEnds are the end-of-data look-alikes: bare LF and bare CR around
// the dot, a NUL before it, doubled line ends, and the proper CRLF.CRLF
// (which is harmless in DATA, where the client ends its message there, but
// in BDAT is plain content that a BDAT-to-DATA proxy must dot-stuff).
var smugglingEnds = []struct{ name, end string }{
	{`LF.LF`, "\n.\n"},
	{`LF.CRLF`, "\n.\r\n"},
	{`CRLF.LF`, "\r\n.\n"},
	{`CR.CRLF`, "\r.\r\n"},
	{`CRLF.CR`, "\r\n.\r"},
	{`CR.CR`, "\r.\r"},
	{`LF.CR`, "\n.\r"},
	{`CR.LF`, "\r.\n"},
	{`LFLF.LFLF`, "\n\n.\n\n"},
	{`CRCRLF.CRCRLF`, "\r\r\n.\r\r\n"},
	{`CRLF.CRCRLF`, "\r\n.\r\r\n"},
	{`CRLF NUL.CRLF`, "\r\n\x00.\r\n"},
	{`CRLF.NUL CRLF`, "\r\n.\x00\r\n"},
	{`CRLF.CRLF in BDAT`, "\r\n.\r\n"},
}

// The smuggled part is a full forged transaction to the victim.
func smuggledBody(name, end string) string {
	return "Subject: smuggling " + name + "\r\n\r\nbefore" + end +
		"MAIL FROM:<ceo@example.org>\r\nRCPT TO:<" + victim + ">\r\nDATA\r\n" +
		"Subject: smuggled\r\n\r\nforged\r\n"
}

// For each variant the client gets exactly one reply to its message: 250
// (the backend stored the whole message once, "forged" still in its body)
// or a 5xx (nothing stored); never a second message to the victim.
func TestHardeningSMTPSmugglingAllVariants(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t, "smtpd_forbid_bare_newline = no") // naive legacy backend
	normalize := startTLSGuard(t, pf)
	reject := startTLSGuard(t, pf, withConfig("bare_line_endings: reject\n"))

	delivered := 0
	for _, mode := range []struct {
		name string
		g    *TLSGuard
	}{{"normalize", normalize}, {"reject", reject}} {
		for _, v := range smugglingEnds {
			for _, verb := range []string{"DATA", "BDAT"} {
				if verb == "DATA" && v.end == "\r\n.\r\n" {
					continue // a real end of data in DATA: nothing to smuggle
				}
				name := mode.name + " " + verb + " " + v.name
				c := dialSMTP(t, mode.g.MX)
				c.ehlo("client.example.net")
				c.cmd("MAIL FROM:<someone@foreign.test>").expect(t, 250)
				c.cmd("RCPT TO:<"+alice+">").expect(t, 250)
				body := smuggledBody(name, v.end)
				var r reply
				if verb == "DATA" {
					c.cmd("DATA").expect(t, 354)
					c.send(body + ".\r\n")
					r = c.read()
				} else {
					c.send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body))
					r = c.read()
				}
				switch {
				case r.code == 250:
					// Reject mode's strictness is checked in
					// TestHardeningBareCRAfterDot; here only smuggling.
					delivered++
				case r.code/100 == 5:
					if mode.name == "normalize" && !strings.Contains(v.end, "\x00") {
						t.Errorf("%s: refused with %q; normalize mode should accept", name, r.raw)
					}
				default:
					t.Errorf("%s: end of message got %q, want 250 or 5xx", name, r.raw)
				}
				// Exactly one reply: the next one must answer QUIT.
				c.cmd("QUIT").expect(t, 221)
			}
		}
	}
	msgs := pf.WaitMessages(t, alice, delivered)
	pf.Settle(t)
	pf.ExpectEmpty(t, victim)
	for _, m := range msgs {
		if !strings.Contains(string(m.Body), "forged") {
			t.Errorf("%q was cut short at the backend: body %q", m.Header.Get("Subject"), m.Body)
		}
		if strings.Count(string(m.Raw), "\r") > 0 {
			// The Maildir stores LF line ends; a CR left in it means a bare
			// CR reached the backend as content.
			t.Errorf("%q: stored with a bare CR: %q", m.Header.Get("Subject"), m.Raw)
		}
	}
	if n := postfixAccepted(pf); n != delivered {
		t.Errorf("the backend took in %d messages, tlsguard acknowledged %d", n, delivered)
	}
}

// A bare CR right after a dot at the start of a line ("\r\n.\rX"): go-smtp's
// DATA reader drops the CR together with the stuffing dot (net/textproto,
// which it copies, emits the CR). So reject mode accepts a message that had
// a bare CR (contract: 550 5.5.2), and normalize mode loses a line break
// (contract: the bare CR becomes CRLF). Not a smuggling vector (the message
// stays whole, TestHardeningSMTPSmugglingAllVariants), a fidelity bug.
func TestHardeningBareCRAfterDot(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	normalize := startTLSGuard(t, pf)
	reject := startTLSGuard(t, pf, withConfig("bare_line_endings: reject\n"))

	send := func(g *TLSGuard, subject string) reply {
		c := dialSMTP(t, g.MX)
		c.ehlo("client.example.net")
		r := tryTransaction(t, c, "someone@foreign.test", alice, "Subject: "+subject+"\r\n\r\nbefore\r\n.\rafter\r\n")
		c.cmd("QUIT").expect(t, 221)
		return r
	}
	n := 1
	if r := send(reject, "reject"); r.code != 550 || r.enhanced() != "5.5.2" {
		t.Errorf("reject mode: a bare CR after a line-start dot got %q, want 550 5.5.2", r.raw)
		if r.code == 250 {
			n++
		}
	}
	send(normalize, "normalize").expect(t, 250)
	for _, m := range pf.WaitMessages(t, alice, n) {
		if m.Header.Get("Subject") != "normalize" {
			continue
		}
		if got := string(m.Body); got != "before\n\nafter\n" {
			t.Errorf("normalize mode: stored body %q, want %q (the bare CR as a line end)", got, "before\n\nafter\n")
		}
	}
}
