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
	"time"
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
	{`CRCRLF.CRLF`, "\r\r\n.\r\n"}, // a real CRLF.CRLF after a bare CR: see TestHardeningBareCRBeforeEndOfData
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
					// Reject mode may accept a variant whose bare CR
					// go-smtp dropped before we saw it (CRLF.CR,
					// CRLF.CRCRLF: TestHardeningBareCRAfterDot); here
					// only smuggling is judged.
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

// Two flaws of go-smtp v0.25.1's DATA reader (data.go, dataReader.Read, a
// copy of net/textproto's dotReader that keeps CRLF) around a bare CR; the
// newest release, so tlsguard lives with them. Our connection wrapper sits
// below TLS and Session.Data gets the reader's output, so tlsguard never
// sees the original bytes and cannot restore them.
//
//   - stateDot/stateDotCR: a CR right after a line-start dot is held back
//     (stateDot -> stateDotCR, "continue") and, when the next byte is not
//     LF, stateDotCR emits that byte without the CR (net/textproto emits the
//     saved CR). So "\r\n.\rX" reaches us as "\r\nX": the stuffing dot and
//     the bare CR are gone; reject mode cannot see the bare CR, normalize
//     mode loses a line break.
//   - stateCR: a second CR moves to stateData, which never returns to
//     stateBeginLine on LF, so the CRLF.CRLF in "\r\r\n.\r\n" is not an end
//     of data (TestHardeningBareCRBeforeEndOfData).
//
// Both only ever make go-smtp see fewer ends of data than a backend would,
// never more, so neither can smuggle: the safety property holds and is what
// these tests prove; the exact bytes are pinned so that a go-smtp upgrade
// that changes them fails here, loudly.

// lossyBareCRBody is what the backend stores today for
// "before\r\n.\rafter\r\n" (dot and bare CR lost); faithfulBareCRBody is
// what it would store if go-smtp kept the CR (normalize: the CR is a line end).
const (
	lossyBareCRBody    = "before\nafter\n"
	faithfulBareCRBody = "before\n\nafter\n"
)

// "\r\n.\rX", plain and with a forged transaction after it, in normalize and
// reject mode, against a naive Postfix: the client gets one reply (250),
// the backend stores exactly one message per transaction (the forged part
// as plain body text, never a second message), the session stays in sync,
// and the stored bytes are go-smtp's current, lossy ones.
func TestHardeningBareCRAfterDot(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t, "smtpd_forbid_bare_newline = no") // naive legacy backend
	normalize := startTLSGuard(t, pf)
	reject := startTLSGuard(t, pf, withConfig("bare_line_endings: reject\n"))

	const forged = "MAIL FROM:<ceo@example.org>\r\nRCPT TO:<" + victim + ">\r\nDATA\r\nSubject: smuggled\r\n\r\nforged\r\n"
	payloads := []struct{ name, body, stored string }{
		{"plain", "before\r\n.\rafter\r\n", lossyBareCRBody},
		{"forged", "before\r\n.\r" + forged,
			"before\nMAIL FROM:<ceo@example.org>\nRCPT TO:<" + victim + ">\nDATA\nSubject: smuggled\n\nforged\n"},
	}
	want := map[string]string{} // subject -> stored body
	for _, mode := range []struct {
		name string
		g    *TLSGuard
	}{{"normalize", normalize}, {"reject", reject}} {
		for _, p := range payloads {
			subject := "bare CR after dot, " + mode.name + ", " + p.name
			c := dialSMTP(t, mode.g.MX)
			c.ehlo("client.example.net")
			r := tryTransaction(t, c, "someone@foreign.test", alice, "Subject: "+subject+"\r\n\r\n"+p.body)
			switch {
			case r.code == 250:
				want[subject] = p.stored
			case mode.name == "reject" && r.code == 550 && r.enhanced() == "5.5.2":
				t.Errorf("%s: refused with 550 5.5.2: go-smtp's dataReader (data.go stateDot/stateDotCR) now keeps the bare CR after a line-start dot; "+
					"the library bug is fixed: tighten this test (reject: 550 5.5.2, nothing stored; normalize: %q) and update SECURITY.md", subject, faithfulBareCRBody)
			default:
				t.Errorf("%s: end of data got %q, want 250 (go-smtp hides the bare CR)", subject, r.raw)
			}
			// Exactly one reply to the message, and the session in sync:
			// the next three commands get their own three replies.
			c.send("RSET\r\nNOOP\r\nQUIT\r\n")
			got, closed := c.readUntilClosed(ioTimeout)
			if !closed || len(got) != 3 || !strings.HasPrefix(got[0], "250 ") || !strings.HasPrefix(got[1], "250 ") || !strings.HasPrefix(got[2], "221 ") {
				t.Errorf("%s: RSET, NOOP, QUIT after the message got %q (closed %v), want 250, 250, 221 and a close", subject, got, closed)
			}
		}
	}

	msgs := pf.WaitMessages(t, alice, len(want))
	pf.Settle(t)
	pf.ExpectEmpty(t, victim)
	if n := postfixAccepted(pf); n != len(want) {
		t.Errorf("the backend took in %d messages, tlsguard acknowledged %d", n, len(want))
	}
	if strings.Contains(pf.Log(), "from=<ceo@example.org>") {
		t.Errorf("the backend saw the forged sender as an envelope:\n%s", pf.Log())
	}
	for _, m := range msgs {
		subject := m.Header.Get("Subject")
		stored, ok := want[subject]
		if !ok {
			t.Errorf("unexpected message %q stored", subject)
			continue
		}
		switch got := string(m.Body); {
		case got == stored:
			// go-smtp v0.25.1 as documented above.
		case strings.HasPrefix(subject, "bare CR after dot, normalize, plain") && got == faithfulBareCRBody:
			t.Errorf("%s: stored %q: go-smtp's dataReader (data.go stateDot/stateDotCR) no longer drops the CR after a line-start dot; "+
				"the library bug is fixed: tighten this test to the faithful body and update SECURITY.md", subject, got)
		default:
			t.Errorf("%s: stored body %q, want %q (go-smtp v0.25.1: the dot and the bare CR are dropped); "+
				"if go-smtp changed, re-check the smuggling property and tighten this test", subject, got, stored)
		}
	}
}

// A message whose last line ends in a bare CR right before the CRLF.CRLF
// ("before\r\r\n.\r\n"), with the next transaction pipelined behind it (RFC
// 2920 allows that): go-smtp (data.go stateCR) does not see this end of
// data, so the dot and the pipelined commands are read as message content.
// Nothing may come of it: no reply until data_timeout, then one reply and a
// close (bounded, not a hang): 421 4.4.2 in normalize mode; in reject mode
// the 550 5.5.2 for the bare CR, which go-smtp sends once its drain of the
// rest of the data ends at the timeout. The pipelined commands never run;
// the backend stores nothing (the transfer is aborted without a final dot).
func TestHardeningBareCRBeforeEndOfData(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t, "smtpd_forbid_bare_newline = no")
	const limits = "limits:\n  data_timeout: 2s\n"
	normalize := startTLSGuard(t, pf, withConfig(limits))
	reject := startTLSGuard(t, pf, withConfig(limits+"bare_line_endings: reject\n"))

	for _, mode := range []struct {
		name, want string
		g          *TLSGuard
	}{{"normalize", "421 4.4.2 ", normalize}, {"reject", "550 5.5.2 ", reject}} {
		c := dialSMTP(t, mode.g.MX)
		c.ehlo("client.example.net")
		c.cmd("MAIL FROM:<someone@foreign.test>").expect(t, 250)
		c.cmd("RCPT TO:<"+alice+">").expect(t, 250)
		c.cmd("DATA").expect(t, 354)
		c.send("Subject: bare CR before the end, " + mode.name + "\r\n\r\nbefore\r\r\n.\r\n" +
			"MAIL FROM:<ceo@example.org>\r\nRCPT TO:<" + victim + ">\r\nDATA\r\n")
		start := time.Now()
		first, err := c.tryRead(ioTimeout)
		waited := time.Since(start)
		if err != nil {
			t.Errorf("%s: no reply within %v after the message (data_timeout 2s): %v", mode.name, ioTimeout, err)
			continue
		}
		if waited < time.Second && (first.code == 250 || first.enhanced() == "5.5.2") {
			t.Errorf("%s: got %q at once: go-smtp's dataReader (data.go stateCR) now sees the CRLF.CRLF after a bare CR; "+
				"the library bug is fixed: tighten this test (the message ends there and the pipelined MAIL runs) and update SECURITY.md", mode.name, first.raw)
			continue
		}
		rest, closed := c.readUntilClosed(ioTimeout)
		if !strings.HasPrefix(first.raw, mode.want) || len(rest) > 0 || !closed {
			t.Errorf("%s: got %q then %q (closed %v), want only %q and a close", mode.name, first.raw, rest, closed, mode.want)
		}
		if waited < time.Second {
			t.Errorf("%s: reply after %v, before data_timeout (2s): not the timeout", mode.name, waited)
		}
	}
	pf.Settle(t)
	pf.ExpectEmpty(t, alice, victim)
	if n := postfixAccepted(pf); n != 0 {
		t.Errorf("the backend took in %d messages, want none", n)
	}
}
