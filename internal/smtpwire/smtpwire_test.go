package smtpwire

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// pair is a client Conn and the server end of its connection.
func pair(t *testing.T) (*Conn, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	return New(a, 2*time.Second), b
}

func TestReadReplyMultiLine(t *testing.T) {
	c, srv := pair(t)
	go io.WriteString(srv, "250-mx.example ready\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 STARTTLS\r\n")
	r, err := c.ReadReply()
	if err != nil {
		t.Fatal(err)
	}
	if r.Code != 250 || len(r.Lines) != 4 || r.Text() != "mx.example ready\nPIPELINING\nSIZE 1000\nSTARTTLS" {
		t.Fatalf("got %+v", r)
	}
	ext := Extensions(r)
	if _, ok := ext["STARTTLS"]; !ok || ext["SIZE"] != "1000" || len(ext) != 3 {
		t.Errorf("extensions %v", ext)
	}
}

func TestReadReplyRefusesMalformed(t *testing.T) {
	for _, in := range []string{
		"25\r\n",                    // too short
		"abc text\r\n",              // no code
		"250-first\r\n251 last\r\n", // code changed
		"250_x\r\n",                 // bad separator
		strings.Repeat("250-x\r\n", maxReplyLines+1) + "250 end\r\n",
		"250 " + strings.Repeat("x", maxLine+10) + "\r\n",
	} {
		c, srv := pair(t)
		go func() { io.WriteString(srv, in); srv.Close() }()
		if r, err := c.ReadReply(); err == nil {
			t.Errorf("%.40q: accepted as a %d reply of %d lines", in, r.Code, len(r.Lines))
		}
	}
}

func TestExpectAndPipeline(t *testing.T) {
	c, srv := pair(t)
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 256)
		n, _ := srv.Read(buf) // one write for the whole group
		got <- string(buf[:n])
		io.WriteString(srv, "250 2.1.0 Ok\r\n550 5.1.1 <x@example.org>: unknown\r\n")
	}()
	if err := c.Pipeline("MAIL FROM:<a@example.org>", "RCPT TO:<x@example.org>"); err != nil {
		t.Fatal(err)
	}
	if g := <-got; g != "MAIL FROM:<a@example.org>\r\nRCPT TO:<x@example.org>\r\n" {
		t.Errorf("pipelined %q", g)
	}
	if _, err := c.Expect(250); err != nil {
		t.Fatal(err)
	}
	_, err := c.Expect(250)
	var re *ReplyError
	if !errors.As(err, &re) || re.Code != 550 || re.Error() != "550 5.1.1 <x@example.org>: unknown" {
		t.Errorf("refused RCPT: %v", err)
	}
}

// Plaintext behind the 220 to STARTTLS is refused before any handshake.
func TestStartTLSInjection(t *testing.T) {
	c, srv := pair(t)
	go func() {
		buf := make([]byte, 64)
		srv.Read(buf)
		io.WriteString(srv, "220 go ahead\r\n250 injected\r\n")
	}()
	if _, err := c.StartTLS(context.Background(), nil); !errors.Is(err, ErrPlaintextInjected) {
		t.Fatalf("StartTLS: %v, want ErrPlaintextInjected", err)
	}
}
