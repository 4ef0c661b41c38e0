package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/tlsguard/tlsguard/policy"
)

// renamedReply stands for a go-smtp whose reply to STARTTLS has another
// text: it rewrites that reply on its way from go-smtp to the conn.
type renamedReply struct{ net.Conn }

func (r renamedReply) Write(b []byte) (int, error) {
	if bytes.HasPrefix(b, []byte("220 2.0.0 Ready to start TLS")) {
		if _, err := io.WriteString(r.Conn, "220 2.0.0 Go ahead\r\n"); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return r.Conn.Write(b)
}

// renamingListener hands go-smtp renamedReply conns, tracked as the
// listener's own are.
type renamingListener struct{ *listener }

func (l renamingListener) Accept() (net.Conn, error) {
	c, err := l.listener.Accept()
	if err != nil {
		return nil, err
	}
	r := l.srv.record(c)
	l.srv.untrack(r)
	w := renamedReply{c}
	l.srv.track(w, r)
	l.srv.served(r, w)
	return w, nil
}

// The handshake deadline after STARTTLS starts from go-smtp's OnStartTLS,
// not from the text of its 220 reply: with another text, a client that
// sends no ClientHello is still closed after HandshakeTimeout (not after
// the much longer CommandTimeout), and the STARTTLS and the failed
// handshake are counted.
func TestStartTLSHandshakeTimeoutWhateverTheReplyText(t *testing.T) {
	pol, err := policy.Parse("test.yaml", []byte("local_domains: [example.org]\n"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{Hostname: "mail.example.org", Policy: pol, TLS: &tls.Config{},
		Backend: BackendConfig{Address: "127.0.0.1:1", TLS: TLSNone, Timeout: time.Second, DataDoneTimeout: time.Second,
			MaxConnections: 10, SpoolAfter: time.Second},
		Limits: Limits{MaxMessageBytes: 1 << 20, MaxRecipients: 10, MaxLineLength: 2000, MaxSessions: 10, MaxSessionsPerIP: 10,
			CommandTimeout: time.Hour, DataTimeout: time.Minute, WriteTimeout: time.Minute, HandshakeTimeout: 200 * time.Millisecond,
			AuthFailDelay: time.Nanosecond, AuthMaxFailures: 3, AuthFailWindow: time.Minute,
			AuthUserMaxFailures: 3, AuthRemember: time.Minute, AuthMaxConcurrent: 8}})
	if err != nil {
		t.Fatal(err)
	}
	lc := ListenerConfig{Name: "submission", Address: "127.0.0.1:0", TLS: TLSStartTLS}
	raw, err := net.Listen("tcp", lc.Address)
	if err != nil {
		t.Fatal(err)
	}
	l := newListener(s, raw, lc, s.cfg.TLS)
	srv := s.smtpServer(lc)
	go srv.Serve(renamingListener{l})
	t.Cleanup(func() { srv.Close(); l.Close() })

	c, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	reply := func() string {
		t.Helper()
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("reading a reply: %v", err)
			}
			if len(line) < 4 || line[3] != '-' {
				return strings.TrimRight(line, "\r\n")
			}
		}
	}
	reply() // greeting
	io.WriteString(c, "EHLO client.example.net\r\n")
	reply()
	io.WriteString(c, "STARTTLS\r\n")
	if got := reply(); got != "220 2.0.0 Go ahead" {
		t.Fatalf("STARTTLS: got %q, want the renamed 220", got)
	}
	// No ClientHello.
	if rest, err := io.ReadAll(r); err != nil {
		t.Fatalf("after STARTTLS and no ClientHello: %v (got %q), want the connection closed by the handshake timeout", err, rest)
	}

	count := func(m interface{ Write(*dto.Metric) error }) float64 {
		var d dto.Metric
		m.Write(&d)
		return d.GetCounter().GetValue()
	}
	if n := count(s.metrics.startTLS.WithLabelValues(lc.Name)); n != 1 {
		t.Errorf("starttls_total = %v, want 1", n)
	}
	waitUntil := time.Now().Add(5 * time.Second)
	for count(s.metrics.handshakes.WithLabelValues(lc.Name, "starttls", "", "failed")) != 1 && time.Now().Before(waitUntil) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := count(s.metrics.handshakes.WithLabelValues(lc.Name, "starttls", "", "failed")); n != 1 {
		t.Errorf("failed STARTTLS handshakes = %v, want 1", n)
	}
}
