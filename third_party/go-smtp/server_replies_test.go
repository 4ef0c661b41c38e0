package smtp_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// TestServerPlainReplies checks the texts of the replies a client sees:
// the server's own name opens the HELO and EHLO replies (RFC 5321
// 4.1.1.1), MAIL and RCPT get the enhanced codes of RFC 3463 3.2 and 3.3
// (X.1.0 originator, X.1.5 destination), QUIT gets 221.
func TestServerPlainReplies(t *testing.T) {
	_, s, c, scanner := testServer(t, func(s *smtp.Server) {
		s.Domain = "mx.example.org"
	})
	defer s.Close()
	defer c.Close()
	scanner.Scan() // the 220 greeting

	io.WriteString(c, "HELO client.test\r\n")
	scanner.Scan()
	if got := scanner.Text(); got != "250 mx.example.org" {
		t.Fatalf("HELO reply %q, want %q", got, "250 mx.example.org")
	}

	io.WriteString(c, "EHLO client.test\r\n")
	scanner.Scan()
	if got := scanner.Text(); got != "250-mx.example.org" {
		t.Fatalf("first EHLO line %q, want %q", got, "250-mx.example.org")
	}
	for scanner.Scan() && !strings.HasPrefix(scanner.Text(), "250 ") {
	}

	for _, step := range []struct{ cmd, want string }{
		{"MAIL FROM:<root@nsa.gov>", "250 2.1.0 Ok"},
		{"RCPT TO:<root@gchq.gov.uk>", "250 2.1.5 Ok"},
		{"QUIT", "221 2.0.0 Bye"},
	} {
		io.WriteString(c, step.cmd+"\r\n")
		scanner.Scan()
		if got := scanner.Text(); got != step.want {
			t.Errorf("%s: reply %q, want %q", step.cmd, got, step.want)
		}
	}
}

// TestServerIdleTimeoutReply checks the reply to a client that sends no
// command within ReadTimeout.
func TestServerIdleTimeoutReply(t *testing.T) {
	_, s, c, scanner := testServerGreeted(t, func(s *smtp.Server) {
		s.ReadTimeout = 50 * time.Millisecond
	})
	defer s.Close()
	defer c.Close()

	scanner.Scan()
	if got, want := scanner.Text(), "421 4.4.2 Idle timeout, closing connection"; got != want {
		t.Fatalf("reply %q, want %q", got, want)
	}
}
