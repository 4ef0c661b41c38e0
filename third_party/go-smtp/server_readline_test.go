package smtp_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// A command line cut off by ReadTimeout is not executed: the client gets
// the timeout reply only, never a reply to the half line.
func TestServerPartialLineAtTimeout(t *testing.T) {
	_, s, c, scanner, _ := testServerEhlo(t, func(s *smtp.Server) { s.ReadTimeout = 300 * time.Millisecond })
	defer s.Close()
	defer c.Close()

	io.WriteString(c, "NOOP")
	if !scanner.Scan() {
		t.Fatal("no reply to a half line at the timeout:", scanner.Err())
	}
	if got := scanner.Text(); !strings.HasPrefix(got, "421 4.4.2 ") {
		t.Fatalf("half line at the timeout: got %q, want only 421 4.4.2", got)
	}
}

// Lines end at LF or CRLF; a line longer than the read buffer is read whole.
func TestServerLongCommandLine(t *testing.T) {
	_, s, c, scanner, _ := testServerEhlo(t)
	defer s.Close()
	defer c.Close()

	io.WriteString(c, "NOOP "+strings.Repeat("x", 1500)+"\r\nNOOP\n")
	for i := 0; i < 2; i++ {
		if !scanner.Scan() || !strings.HasPrefix(scanner.Text(), "250 ") {
			t.Fatalf("NOOP %d: got %q (%v), want 250", i, scanner.Text(), scanner.Err())
		}
	}
}
