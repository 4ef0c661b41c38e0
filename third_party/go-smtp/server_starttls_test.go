package smtp

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

type startTLSBackend struct{}

func (startTLSBackend) NewSession(*Conn) (Session, error) { return startTLSSession{}, nil }

type startTLSSession struct{}

func (startTLSSession) Reset()                          {}
func (startTLSSession) Logout() error                   { return nil }
func (startTLSSession) Mail(string, *MailOptions) error { return nil }
func (startTLSSession) Rcpt(string, *RcptOptions) error { return nil }
func (startTLSSession) Data(r io.Reader) error          { _, err := io.Copy(io.Discard, r); return err }

// startTLSServer starts a server with STARTTLS and returns a connection
// to it that has read the greeting and sent EHLO.
func startTLSServer(t *testing.T, opts ...func(*Server)) (net.Conn, *bufio.Reader) {
	t.Helper()
	cert, err := tls.X509KeyPair(localhostCert, localhostKey)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(startTLSBackend{})
	s.Domain = "localhost"
	s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	for _, o := range opts {
		o(s)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Close() })
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	readReply(t, r) // greeting
	io.WriteString(c, "EHLO localhost\r\n")
	readReply(t, r)
	return c, r
}

// readReply reads one reply, multi-line or not, and returns its last line.
func readReply(t *testing.T, r *bufio.Reader) string {
	t.Helper()
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("reading a reply: %v", err)
		}
		if len(l) < 4 || l[3] != '-' {
			return strings.TrimRight(l, "\r\n")
		}
	}
}

// A failed STARTTLS handshake closes the connection: no plaintext reply,
// and commands sent in place of a ClientHello are never run.
func TestServerStartTLSHandshakeFailureCloses(t *testing.T) {
	c, r := startTLSServer(t)
	io.WriteString(c, "STARTTLS\r\n")
	if l := readReply(t, r); !strings.HasPrefix(l, "220 ") {
		t.Fatalf("STARTTLS: got %q, want 220", l)
	}
	io.WriteString(c, "MAIL FROM:<a@example.org>\r\nNOOP\r\n")
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("after a failed handshake: %v, want the connection closed", err)
	}
	if len(rest) != 0 {
		t.Errorf("after a failed handshake the server sent %q, want nothing", rest)
	}
}

// RFC 3207 4: the command is "STARTTLS" with no parameters. One with a
// parameter is a syntax error; no handshake starts and the session goes
// on in plaintext.
func TestServerStartTLSWithParameter(t *testing.T) {
	c, r := startTLSServer(t)
	io.WriteString(c, "STARTTLS foo\r\n")
	if l := readReply(t, r); !strings.HasPrefix(l, "501 5.5.4 ") {
		t.Fatalf("STARTTLS foo: got %q, want 501 5.5.4", l)
	}
	io.WriteString(c, "NOOP\r\n")
	if l := readReply(t, r); !strings.HasPrefix(l, "250 ") {
		t.Fatalf("NOOP after STARTTLS foo: got %q, want 250", l)
	}
	io.WriteString(c, "STARTTLS\r\n")
	if l := readReply(t, r); !strings.HasPrefix(l, "220 ") {
		t.Fatalf("STARTTLS: got %q, want 220", l)
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake after STARTTLS: %v", err)
	}
}

// OnStartTLS runs once per accepted STARTTLS, after the 220 reply and
// before the handshake, on the connection below TLS; not for a refused
// STARTTLS.
func TestServerOnStartTLS(t *testing.T) {
	type call struct {
		isTLS    bool
		tlsBelow bool
	}
	calls := make(chan call, 4)
	c, r := startTLSServer(t, func(s *Server) {
		s.OnStartTLS = func(c *Conn) {
			_, isTLS := c.TLSConnectionState()
			_, tlsBelow := c.Conn().(*tls.Conn)
			calls <- call{isTLS, tlsBelow}
		}
	})
	io.WriteString(c, "STARTTLS foo\r\n")
	readReply(t, r)
	io.WriteString(c, "STARTTLS\r\n")
	if l := readReply(t, r); !strings.HasPrefix(l, "220 ") {
		t.Fatalf("STARTTLS: got %q, want 220", l)
	}
	select {
	case got := <-calls:
		if got.isTLS || got.tlsBelow {
			t.Errorf("OnStartTLS saw a TLS connection (%+v), want the one below TLS", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("OnStartTLS not called before the handshake")
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("handshake after STARTTLS: %v", err)
	}
	tr := bufio.NewReader(tc)
	io.WriteString(tc, "EHLO localhost\r\n")
	readReply(t, tr)
	io.WriteString(tc, "STARTTLS\r\n")
	if l := readReply(t, tr); !strings.HasPrefix(l, "502 ") {
		t.Fatalf("STARTTLS inside TLS: got %q, want 502", l)
	}
	if len(calls) != 0 {
		t.Errorf("OnStartTLS called %d more times, want once", len(calls))
	}
}

func TestParseCmdStartTLS(t *testing.T) {
	for _, tc := range []struct{ line, cmd, arg string }{
		{"STARTTLS\r\n", "STARTTLS", ""},
		{"starttls\r\n", "STARTTLS", ""},
		{"STARTTLS foo\r\n", "STARTTLS", "foo"},
		{"STARTTLS  \r\n", "STARTTLS", ""},
		{"STARTTLSX\r\n", "", ""},
	} {
		cmd, arg, err := parseCmd(tc.line)
		if tc.cmd == "" {
			if err == nil {
				t.Errorf("parseCmd(%q) = %q, %q; want an error", tc.line, cmd, arg)
			}
			continue
		}
		if err != nil || cmd != tc.cmd || arg != tc.arg {
			t.Errorf("parseCmd(%q) = %q, %q, %v; want %q, %q", tc.line, cmd, arg, err, tc.cmd, tc.arg)
		}
	}
}
