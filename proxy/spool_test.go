package proxy_test

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// withSpoolAfter sets backend.spool_after.
func withSpoolAfter(d time.Duration) envOpt {
	return func(c *proxyConfig) { c.Backend.SpoolAfter = d }
}

// A client that pauses after a RCPT, and again in the middle of its
// message, gives its backend connection up each time; the message is sent
// once complete, on a new connection, with MAIL and every RCPT replayed, and
// the client's 250 is the backend's. The backend stores it once.
func TestSlowClientIsSpooledAndReplayed(t *testing.T) {
	be := newFakeBackend(t)
	e := newEnv(t, be, withSpoolAfter(200*time.Millisecond))
	c := e.dial(t, lMX)
	c.ehlo()
	c.cmd("MAIL FROM:<carol@foreign.test>", 250)
	c.cmd("RCPT TO:<alice@example.org>", 250)
	time.Sleep(600 * time.Millisecond) // the connection is given up
	c.cmd("RCPT TO:<bob@example.org>", 250)
	time.Sleep(600 * time.Millisecond)
	c.cmd("DATA", 354)
	c.sendRaw("Subject: slow\r\n\r\nfirst part\r\n")
	time.Sleep(600 * time.Millisecond)
	c.sendRaw("second part\r\n.\r\n")
	c.expect(250)
	c.cmd("QUIT", 221)
	msgs := be.messages()
	if len(msgs) != 1 {
		t.Fatalf("backend stored %d messages, want 1", len(msgs))
	}
	if got := strings.Join(msgs[0].To, ","); got != "alice@example.org,bob@example.org" {
		t.Errorf("recipients %q, want both", got)
	}
	if body := string(msgs[0].Data); !strings.Contains(body, "first part\r\nsecond part\r\n") {
		t.Errorf("body %q lost a part", body)
	}
	if n := strings.Count(be.rawAll(), "MAIL FROM:<carol@foreign.test>"); n < 3 {
		t.Errorf("MAIL sent %d times, want the original and two replays", n)
	}
}

// If the backend refuses, at the replay, a recipient it had accepted, the
// client is told 451 4.4.1 (it retries; nothing is stored), never the 5xx
// of a recipient the client was told was fine.
func TestSpooledReplayRefusedIsTempfail(t *testing.T) {
	be := newFakeBackend(t)
	var refuse atomic.Bool
	be.rcptErr = func(string) error {
		if refuse.Load() {
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "gone now"}
		}
		return nil
	}
	e := newEnv(t, be, withSpoolAfter(200*time.Millisecond))
	c := e.dial(t, lMX)
	c.ehlo()
	c.cmd("MAIL FROM:<carol@foreign.test>", 250)
	c.cmd("RCPT TO:<alice@example.org>", 250)
	c.cmd("DATA", 354)
	c.sendRaw("Subject: slow\r\n\r\n")
	time.Sleep(600 * time.Millisecond)
	refuse.Store(true)
	c.sendRaw("body\r\n.\r\n")
	if got := c.expect(451); !strings.HasPrefix(got, "4.4.1") {
		t.Errorf("reply %q, want 451 4.4.1", got)
	}
	c.cmd("QUIT", 221)
	if n := len(be.messages()); n != 0 {
		t.Fatalf("backend stored %d messages, want none", n)
	}
}
