package proxy_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tlsguard/tlsguard/proxy"
)

const smuggledCommands = "MAIL FROM:<evil@foreign.test>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n"

var smugglingSeqs = []string{"\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\r.\r\n", "\r\n.\r", "\n.\r"}

// Contract: bare LF/CR never reach the backend as a line ending; no
// sequence can end the message early at the backend (SMTP smuggling).
func TestSMTPSmugglingDATA(t *testing.T) {
	for _, seq := range smugglingSeqs {
		t.Run(fmt.Sprintf("%q", seq), func(t *testing.T) {
			e := newEnv(t, nil)
			c := e.session(t, lMX, false, false)
			body := "Subject: smuggle\r\n\r\nhello" + seq + smuggledCommands
			code, text := c.sendMessage("x@foreign.test", []string{"bob@example.org"}, body)
			if code != 250 {
				t.Fatalf("end of DATA: %d %s", code, text)
			}
			c.cmd("QUIT", 221)
			checkOneCleanMessage(t, e)
		})
	}
}

func TestSMTPSmugglingBDAT(t *testing.T) {
	for _, seq := range smugglingSeqs {
		t.Run(fmt.Sprintf("%q", seq), func(t *testing.T) {
			e := newEnv(t, nil)
			c := e.session(t, lMX, false, false)
			c.cmd("MAIL FROM:<x@foreign.test>", 250)
			c.cmd("RCPT TO:<bob@example.org>", 250)
			body := "Subject: smuggle\r\n\r\nhello" + seq + smuggledCommands + "\r\n.\r\n"
			c.sendRaw(fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body))
			c.expect(250)
			c.cmd("QUIT", 221)
			checkOneCleanMessage(t, e)
		})
	}
}

func checkOneCleanMessage(t *testing.T, e *env) {
	t.Helper()
	settle()
	msgs := e.be.messages()
	if len(msgs) != 1 {
		t.Fatalf("backend got %d messages, want exactly 1: %+v", len(msgs), msgs)
	}
	m := msgs[0]
	if m.From != "x@foreign.test" || strings.Join(m.To, ",") != "bob@example.org" {
		t.Errorf("envelope: %q → %q", m.From, m.To)
	}
	if !allCRLF(m.Data) {
		t.Errorf("backend got a bare CR or LF: %q", m.Data)
	}
	if !strings.Contains(string(m.Data), "MAIL FROM:<evil@foreign.test>\r\n") {
		t.Errorf("smuggled text missing from the body: %q", m.Data)
	}
	if got := e.be.rawLines("MAIL FROM:"); len(got) != 2 { // one as a command, one as body text
		t.Logf("backend MAIL lines: %q", got)
	}
	raw := e.be.rawAll()
	if i := strings.Index(raw, "\r\nDATA\r\n"); i >= 0 && !allCRLF([]byte(raw[i:])) {
		t.Errorf("bare CR or LF on the backend wire: %q", raw[i:])
	}
}

// Bare LF and bare CR anywhere become CRLF (normalize mode, the default).
func TestBareLineEndingsNormalized(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lMX, false, false)
	code, text := c.sendMessage("x@foreign.test", []string{"bob@example.org"}, "Subject: n\nX-A: 1\r\rbody\r\nend\nlast\r\n")
	if code != 250 {
		t.Fatalf("%d %s", code, text)
	}
	m := e.be.messages()
	if len(m) != 1 {
		t.Fatalf("%d messages", len(m))
	}
	if got := bodyAfterReceived(t, m[0].Data); got != "Subject: n\r\nX-A: 1\r\n\r\nbody\r\nend\r\nlast\r\n" {
		t.Errorf("normalised body %q", got)
	}
}

// Contract: NUL in DATA → rejected, nothing stored.
func TestNULRejected(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lMX, false, false)
	code, text := c.sendMessage("x@foreign.test", []string{"bob@example.org"}, "Subject: x\r\n\r\na\x00b\r\n")
	if code != 554 {
		t.Errorf("NUL: %d %s", code, text)
	}
	c.cmd("NOOP", 250)
	settle()
	if m := e.be.messages(); len(m) != 0 {
		t.Errorf("backend stored %d messages", len(m))
	}
	// A clean message afterwards in the same session goes through.
	if code, text := c.sendMessage("x@foreign.test", []string{"bob@example.org"}, "Subject: y\r\n\r\nok\r\n"); code != 250 {
		t.Fatalf("after NUL: %d %s", code, text)
	}
}

func TestNULRejectedBDAT(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lMX, false, false)
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	body := "Subject: x\r\n\r\na\x00b\r\n"
	c.sendRaw(fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body))
	c.expect(554)
	settle()
	if m := e.be.messages(); len(m) != 0 {
		t.Errorf("backend stored %d messages", len(m))
	}
}

// Contract: bare_line_endings reject mode → 550 5.5.2, nothing stored.
func TestBareLineEndingsRejectMode(t *testing.T) {
	for _, bad := range []string{"a\nb\r\n", "a\rb\r\n", "a\r\n.\nb\r\n"} {
		e := newEnv(t, nil, func(c *proxyConfig) { c.BareLineEndings = proxy.BareReject })
		c := e.session(t, lMX, false, false)
		code, text := c.sendMessage("x@foreign.test", []string{"bob@example.org"}, "Subject: x\r\n\r\n"+bad)
		if code != 550 || !strings.HasPrefix(text, "5.5.2 ") {
			t.Errorf("%q in reject mode: %d %s", bad, code, text)
		}
		settle()
		if m := e.be.messages(); len(m) != 0 {
			t.Errorf("%q: backend stored %d messages", bad, len(m))
		}
		// Clean CRLF is fine in reject mode.
		if code, text := c.sendMessage("x@foreign.test", []string{"bob@example.org"}, "Subject: ok\r\n\r\nfine\r\n"); code != 250 {
			t.Errorf("clean message in reject mode: %d %s", code, text)
		}
	}
}

// Contract: BDAT (CHUNKING) works, in several chunks, and is normalised too;
// a CRLF split across two chunks stays one line ending.
func TestBDATChunks(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lSubmissions, true, true)
	c.cmd("MAIL FROM:<"+testUser+">", 250)
	c.cmd("RCPT TO:<r@foreign.test>", 250)
	chunks := []string{"Subject: chunked\r", "\n\r\nline one\n", "line two\rline three\r\n.dot\r\n"}
	for i, ch := range chunks {
		last := ""
		if i == len(chunks)-1 {
			last = " LAST"
		}
		c.sendRaw(fmt.Sprintf("BDAT %d%s\r\n%s", len(ch), last, ch))
		c.expect(250)
	}
	m := e.be.messages()
	if len(m) != 1 {
		t.Fatalf("%d messages", len(m))
	}
	want := "Subject: chunked\r\n\r\nline one\r\nline two\r\nline three\r\n.dot\r\n"
	if got := bodyAfterReceived(t, m[0].Data); got != want {
		t.Errorf("BDAT body\n got %q\nwant %q", got, want)
	}
}

// Contract: message too large → 552 5.3.4 (SIZE parameter and actual size).
func TestMessageTooLarge(t *testing.T) {
	e := newEnv(t, nil, withLimits(func(l *proxyLimits) { l.MaxMessageBytes = 1000 }))
	c := e.session(t, lMX, false, false)
	c.send("MAIL FROM:<x@foreign.test> SIZE=5000")
	text := c.expect(552)
	if !strings.HasPrefix(text, "5.3.4 ") {
		t.Errorf("SIZE too large: 552 %s", text)
	}
	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 98)+"\r\n", 20)
	code, text := c.sendMessage("x@foreign.test", []string{"bob@example.org"}, big)
	if code != 552 || !strings.HasPrefix(text, "5.3.4 ") {
		t.Errorf("message too large: %d %s", code, text)
	}
	// BDAT too.
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.sendRaw(fmt.Sprintf("BDAT %d LAST\r\n%s", len(big), big))
	code, lines, err := c.reply()
	if err != nil || code != 552 {
		t.Errorf("BDAT too large: %d %q %v", code, lines, err)
	}
	settle()
	if m := e.be.messages(); len(m) != 0 {
		t.Errorf("backend stored %d messages", len(m))
	}
}

// SIZE advertises max_message_size, and go-smtp refuses a message of
// exactly MaxMessageBytes: the limit is exclusive (as the README says). One
// byte less is accepted, exactly the limit gets 552 5.3.4.
func TestMessageSizeLimitIsExclusive(t *testing.T) {
	e := newEnv(t, nil, withLimits(func(l *proxyLimits) { l.MaxMessageBytes = 1000 }))
	head := "Subject: exact\r\n\r\n"
	for _, tc := range []struct {
		size int
		want int
	}{{999, 250}, {1000, 552}} {
		c := e.session(t, lMX, false, false)
		body := head + strings.Repeat("y", tc.size-len(head)-2) + "\r\n"
		if len(body) != tc.size {
			t.Fatal(len(body))
		}
		code, text := c.sendMessage("x@foreign.test", []string{"bob@example.org"}, body)
		if code != tc.want {
			t.Errorf("message of %d bytes (limit 1000): %d %s, want %d", tc.size, code, text, tc.want)
		}
	}
}

// A slow but moving DATA (each gap below DataTimeout, the whole upload
// longer than it) succeeds.
func TestSlowDataSucceeds(t *testing.T) {
	e := newEnv(t, nil, withLimits(func(l *proxyLimits) {
		l.DataTimeout = time.Second
		l.CommandTimeout = 10 * time.Second
	}))
	c := e.session(t, lMX, false, false)
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.cmd("DATA", 354)
	body := "Subject: slow\r\n\r\nabc\r\n"
	start := time.Now()
	for i := 0; i < len(body); i++ {
		c.sendRaw(body[i : i+1])
		time.Sleep(100 * time.Millisecond)
	}
	if time.Since(start) < 2*time.Second {
		t.Fatal("upload was not slower than DataTimeout")
	}
	c.sendRaw(".\r\n")
	c.expect(250)
	if m := e.be.messages(); len(m) != 1 {
		t.Fatalf("%d messages", len(m))
	}
}

// A stalled DATA gets 421 4.4.2 and the connection closes; the rest of the
// body is never read as commands, and nothing is delivered.
func TestStalledDataClosesWithoutResync(t *testing.T) {
	e := newEnv(t, nil, withLimits(func(l *proxyLimits) {
		l.DataTimeout = 300 * time.Millisecond
		l.CommandTimeout = 10 * time.Second
	}))
	c := e.session(t, lMX, false, false)
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.cmd("DATA", 354)
	c.sendRaw("Subject: stalled\r\n\r\npartial")
	text := c.expect(421)
	if !strings.HasPrefix(text, "4.4.2 ") {
		t.Errorf("stalled DATA: 421 %s", text)
	}
	// The rest of the body arrives late, with commands in it.
	c.conn.Write([]byte(" rest\r\n.\r\nMAIL FROM:<x@foreign.test>\r\nNOOP\r\n"))
	out := c.readUntilClosed()
	for _, l := range strings.Split(out, "\r\n") {
		if strings.HasPrefix(l, "2") || strings.HasPrefix(l, "3") {
			t.Errorf("late body read as commands: %q", out)
		}
	}
	settle()
	if m := e.be.messages(); len(m) != 0 {
		t.Errorf("backend stored %d messages", len(m))
	}
}

// Long DATA lines: over MaxLineLength the message is refused, not split.
func TestDataLineTooLong(t *testing.T) {
	e := newEnv(t, nil, withLimits(func(l *proxyLimits) { l.MaxLineLength = 200 }))
	c := e.session(t, lMX, false, false)
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.cmd("DATA", 354)
	c.sendRaw("Subject: long\r\n\r\n" + strings.Repeat("z", 500) + "\r\n.\r\n")
	code, lines, err := c.reply()
	if err == nil && code/100 == 2 {
		t.Errorf("over-long line accepted: %d %q", code, lines)
	}
	settle()
	if m := e.be.messages(); len(m) != 0 {
		t.Errorf("backend stored %d messages", len(m))
	}
}

// A BDAT chunk that stalls is a stalled DATA: 421 4.4.2 (temporary, the
// client keeps the message), never a permanent 5xx and never a reply that
// carries internal detail such as socket addresses.
func TestStalledBDATChunk(t *testing.T) {
	e := newEnv(t, nil, withLimits(func(l *proxyLimits) {
		l.DataTimeout = 300 * time.Millisecond
		l.CommandTimeout = 600 * time.Millisecond
	}))
	c := e.session(t, lMX, false, false)
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.sendRaw("BDAT 100 LAST\r\nSubject: stalled\r\n")
	code, lines, err := c.reply()
	if err != nil {
		t.Fatalf("no reply to a stalled BDAT: %v", err)
	}
	text := strings.Join(lines, " ")
	if code != 421 || !strings.HasPrefix(text, "4.4.2 ") {
		t.Errorf("stalled BDAT chunk: %d %s (want 421 4.4.2)", code, text)
	}
	if strings.Contains(text, "127.0.0.1") || strings.Contains(text, "tcp") {
		t.Errorf("reply leaks internal detail: %d %s", code, text)
	}
	c.readUntilClosed()
	settle()
	if m := e.be.messages(); len(m) != 0 {
		t.Errorf("backend stored %d messages", len(m))
	}
}

// STARTTLS between BDAT chunks (plaintext port 25, no AUTH needed) must not
// wedge the session: go-smtp ends the old session while its Data still runs.
func TestSTARTTLSBetweenBDATChunksDoesNotHang(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lMX, false, false)
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.sendRaw("BDAT 12\r\nSubject: x\r\n")
	c.expect(250)
	c.starttls()
	c.send("EHLO again.test")
	code, lines, err := c.reply()
	if err != nil {
		t.Fatalf("EHLO after STARTTLS between BDAT chunks: no reply (session deadlocked?): %v", err)
	}
	if code != 250 {
		t.Errorf("EHLO: %d %q", code, lines)
	}
}
