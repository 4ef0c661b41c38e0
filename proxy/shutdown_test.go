package proxy_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Contract: shutdown stops accepting, lets sessions finish within a grace
// period, then says 421 4.3.2 to the rest.
func TestShutdownSays421AfterGrace(t *testing.T) {
	for _, tc := range []struct {
		name     string
		listener string
		tls      bool
	}{
		{"plaintext", lMX, false},
		{"after STARTTLS", lSubmission, true},
		{"implicit TLS", lSubmissions, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			c := e.session(t, tc.listener, tc.tls, false)
			done := make(chan struct{})
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
				defer cancel()
				e.srv.Shutdown(ctx)
				close(done)
			}()
			code, lines, err := c.reply()
			if err != nil {
				t.Fatalf("no 421 4.3.2 at shutdown: %v", err)
			}
			if code != 421 || !strings.HasPrefix(lines[0], "4.3.2 ") {
				t.Errorf("at shutdown: %d %q", code, lines)
			}
			select {
			case <-done:
			case <-time.After(waitMax):
				t.Fatal("Shutdown did not return")
			}
			if _, err := net.DialTimeout("tcp", e.addr[tc.listener], time.Second); err == nil {
				t.Error("still accepting after Shutdown")
			}
		})
	}
}

func TestShutdownLetsSessionFinish(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lMX, false, false)
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	done := make(chan struct{})
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*waitMax)
		defer cancel()
		e.srv.Shutdown(ctx)
		close(done)
	}()
	time.Sleep(100 * time.Millisecond)
	c.cmd("RCPT TO:<bob@example.org>", 250)
	c.cmd("DATA", 354)
	c.sendRaw("Subject: last\r\n\r\nb\r\n.\r\n")
	c.expect(250)
	c.cmd("QUIT", 221)
	select {
	case <-done:
	case <-time.After(2 * waitMax):
		t.Fatal("Shutdown did not return after the last session ended")
	}
	if m := e.be.messages(); len(m) != 1 {
		t.Errorf("%d messages", len(m))
	}
}

// Pooled backend connections are reused across sessions; one the backend
// closed meanwhile is replaced without the client noticing.
func TestBackendPoolAcrossSessions(t *testing.T) {
	e := newEnv(t, nil)
	for i := 0; i < 3; i++ {
		c := e.session(t, lMX, false, false)
		if code, text := c.sendMessage("x@foreign.test", []string{"bob@example.org"}, "Subject: p\r\n\r\nb\r\n"); code != 250 {
			t.Fatalf("session %d: %d %s", i, code, text)
		}
		c.cmd("QUIT", 221)
		c.expectClosed()
	}
	if n := e.be.connections(); n > 2 {
		t.Logf("backend connections: %d (start-up + pooled)", n)
	}
	if m := e.be.messages(); len(m) != 3 {
		t.Fatalf("%d messages", len(m))
	}
}

func TestBackendPoolStaleConnectionReplaced(t *testing.T) {
	be := newFakeBackend(t)
	be.closeIdle.Store(true)
	e := newEnv(t, be)
	c := e.session(t, lMX, false, false)
	if code, text := c.sendMessage("x@foreign.test", []string{"bob@example.org"}, "Subject: 1\r\n\r\nb\r\n"); code != 250 {
		t.Fatalf("first: %d %s", code, text)
	}
	c.cmd("QUIT", 221)
	c.expectClosed()
	time.Sleep(200 * time.Millisecond) // the backend has hung up the pooled connection
	c = e.session(t, lMX, false, false)
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	c.send("RCPT TO:<bob@example.org>")
	code, lines, err := c.reply()
	if err != nil || code != 250 {
		t.Fatalf("new session after the backend closed a pooled connection: %d %q %v", code, lines, err)
	}
}

// Contract: non-ASCII address without SMTPUTF8 → 553 5.6.7; control bytes
// in an address → 553 5.1.3.
func TestAddressSyntaxReplies(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lMX, false, false)
	c.cmd("MAIL FROM:<x@foreign.test>", 250)
	c.send("RCPT TO:<jörg@example.org>")
	if text := c.expect(553); !strings.HasPrefix(text, "5.6.7 ") {
		t.Errorf("non-ASCII: 553 %s", text)
	}
	c.send("RCPT TO:<a\x01b@example.org>")
	if text := c.expect(553); !strings.HasPrefix(text, "5.1.3 ") {
		t.Errorf("control byte: 553 %s", text)
	}
	c.send("RCPT TO:<bob@example.org.>")
	code, lines, _ := c.reply()
	t.Logf("trailing dot: %d %q", code, lines)
}

// Extensions the backend lacks are not advertised; those it has are.
func TestExtensionsFollowBackend(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(t, lMX)
	ext := c.ehlo()
	for _, no := range []string{"SMTPUTF8", "DSN", "REQUIRETLS"} {
		if contains(ext, no) {
			t.Errorf("advertises %s the backend lacks: %q", no, ext)
		}
	}
	be := newFakeBackend(t, func(fb *fakeBackend) {
		fb.configure = func(s *smtp.Server) { s.EnableSMTPUTF8 = true; s.EnableDSN = true }
	})
	e2 := newEnv(t, be)
	c2 := e2.dial(t, lMX)
	ext = c2.ehlo()
	for _, yes := range []string{"SMTPUTF8", "DSN"} {
		if !contains(ext, yes) {
			t.Errorf("does not advertise %s the backend has: %q", yes, ext)
		}
	}
}

// Commands pipelined in one write (PIPELINING) are all answered in order.
func TestPipelining(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lMX, false, false)
	c.sendRaw("MAIL FROM:<x@foreign.test>\r\nRCPT TO:<bob@example.org>\r\nRCPT TO:<v@foreign.test>\r\nDATA\r\n")
	c.expect(250)
	c.expect(250)
	c.expectLine(relayDenied)
	c.expect(354)
	c.sendRaw("Subject: p\r\n\r\nb\r\n.\r\nQUIT\r\n")
	c.expect(250)
	c.expect(221)
}
