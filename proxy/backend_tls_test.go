package proxy_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/tlsguard/tlsguard/proxy"
)

// A backend reached with STARTTLS gets the message inside TLS, dot-stuffed
// and terminated exactly once, and the proxy passes its 250 text through.
func TestBackendSTARTTLS(t *testing.T) {
	be := newFakeBackend(t, func(fb *fakeBackend) {
		fb.configure = func(s *smtp.Server) { s.TLSConfig = serverTLSConfig(t) }
		fb.dataReply = &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as TLS123"}
	})
	e := newEnv(t, be, func(c *proxy.Config) {
		c.Backend.TLS = proxy.TLSStartTLS
		c.Backend.TLSConfig = clientTLSConfig(t)
	})
	c := e.session(t, lMX, false, false)
	// As the client stuffs it; the backend must get it unstuffed again.
	wire := "Subject: tls\r\n\r\n..leading dot\r\n...two\r\nlast line\r\n"
	body := "Subject: tls\r\n\r\n.leading dot\r\n..two\r\nlast line\r\n"
	for i := range 2 { // the second one on the kept backend connection
		code, text := c.sendMessage("x@foreign.test", []string{"bob@example.org"}, wire)
		if code != 250 || !strings.Contains(text, "queued as TLS123") {
			t.Fatalf("message %d: %d %s", i, code, text)
		}
	}
	c.cmd("QUIT", 221)
	msgs := be.messages()
	if len(msgs) != 2 {
		t.Fatalf("backend got %d messages", len(msgs))
	}
	for _, m := range msgs {
		if got := bodyAfterReceived(t, m.Data); got != body {
			t.Errorf("backend got %q, want %q", got, body)
		}
	}
	if raw := be.rawAll(); strings.Contains(raw, "leading dot") || strings.Contains(raw, "MAIL FROM") {
		t.Errorf("plaintext on the backend wire after STARTTLS: %q", raw)
	}
}

// A message whose last line has no CRLF (possible with BDAT) gets one, and
// one that has it gets no second one.
func TestForwardFinalCRLF(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"Subject: x\r\n\r\nno newline", "Subject: x\r\n\r\nno newline\r\n"},
		{"Subject: x\r\n\r\nnewline\r\n", "Subject: x\r\n\r\nnewline\r\n"},
		{"Subject: x\r\n\r\n.\r\n..\r\n", "Subject: x\r\n\r\n.\r\n..\r\n"},
	} {
		e := newEnv(t, nil)
		c := e.session(t, lMX, false, false)
		c.cmd("MAIL FROM:<x@foreign.test>", 250)
		c.cmd("RCPT TO:<bob@example.org>", 250)
		c.sendRaw(fmt.Sprintf("BDAT %d LAST\r\n%s", len(tc.body), tc.body))
		c.expect(250)
		c.cmd("QUIT", 221)
		settle()
		msgs := e.be.messages()
		if len(msgs) != 1 {
			t.Fatalf("%q: backend got %d messages", tc.body, len(msgs))
		}
		if got := bodyAfterReceived(t, msgs[0].Data); got != tc.want {
			t.Errorf("%q: backend got %q, want %q", tc.body, got, tc.want)
		}
	}
}
