package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/tlsguard/tlsguard/internal/smtpwire"
)

// conn is one SMTP connection to the backend.
type conn struct {
	c      *smtp.Client
	dl     *deadlineConn // the TCP connection, under TLS if any
	idleAt time.Time     // when it went back to the pool
	reused bool          // taken from the pool or kept by a Leg (may have gone stale)

	owner *Client // set while it holds a slot; owner.mu guards the two below
	held  bool    // counted in owner.active[class]
	class Class
}

// dial connects, greets, does STARTTLS if configured and says EHLO. Errors
// name the backend.
func (c *Client) dial(ctx context.Context) (*conn, error) {
	cfg := &c.cfg
	d := net.Dialer{Timeout: cfg.Timeout}
	raw, err := d.DialContext(ctx, "tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", cfg.Address, err)
	}
	// Every write to the backend is bounded too (DATA streams through here).
	dl := &deadlineConn{Conn: raw, timeout: cfg.Timeout}
	raw = dl
	var sc *smtp.Client
	switch cfg.TLS {
	case TLSImplicit:
		tc := tls.Client(raw, cfg.TLSConfig)
		hctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
		err = tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			raw.Close()
			return nil, fmt.Errorf("backend %s: TLS handshake: %w", cfg.Address, err)
		}
		sc = smtp.NewClient(tc)
	case TLSStartTLS:
		// Done here rather than by go-smtp's NewClientStartTLS, which says
		// EHLO localhost before STARTTLS and silently drops plaintext sent
		// behind the 220 instead of refusing the backend.
		tc, greeting, err := c.startTLS(ctx, raw)
		if err != nil {
			raw.Close()
			return nil, fmt.Errorf("backend %s: STARTTLS: %w", cfg.Address, err)
		}
		sc = smtp.NewClient(&greetedConn{Conn: tc, greeting: greeting})
	default:
		sc = smtp.NewClient(raw)
	}
	sc.CommandTimeout = cfg.Timeout
	sc.SubmissionTimeout = cfg.Timeout
	if err := sc.Hello(cfg.Hostname); err != nil {
		sc.Close()
		// A refusal at the greeting or EHLO is about the backend host, not
		// the message (a sending MTA skips such a host and retries, RFC 5321
		// 3.1): not wrapped, so it never reaches the client as a Reply and
		// a 5xx cannot bounce the message at MAIL or RCPT.
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("backend %s: refused at greeting or EHLO: %v", cfg.Address, err)
		}
		return nil, fmt.Errorf("backend %s: EHLO: %w", cfg.Address, err)
	}
	c.record(sc)
	c.obs.Dialled()
	return &conn{c: sc, dl: dl}, nil
}

// startTLS reads the greeting, says EHLO, checks that STARTTLS is offered,
// sends it and does the handshake (RFC 3207). It returns the TLS connection
// and the greeting line for go-smtp's client, which expects one first.
// raw bounds every read and write itself (deadlineConn).
func (c *Client) startTLS(ctx context.Context, raw net.Conn) (*tls.Conn, []byte, error) {
	w := smtpwire.New(raw, 0)
	greeting, err := w.Expect(220)
	if err != nil {
		return nil, nil, fmt.Errorf("greeting: %w", err)
	}
	if err := w.WriteLine("EHLO " + c.cfg.Hostname); err != nil {
		return nil, nil, err
	}
	ehlo, err := w.Expect(250)
	if err != nil {
		return nil, nil, fmt.Errorf("EHLO: %w", err)
	}
	if _, ok := smtpwire.Extensions(ehlo)["STARTTLS"]; !ok {
		return nil, nil, errors.New("not offered")
	}
	hctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	defer cancel()
	tc, err := w.StartTLS(hctx, c.cfg.TLSConfig)
	if err != nil {
		return nil, nil, err
	}
	return tc, []byte("220 " + greeting.Lines[0] + "\r\n"), nil
}

// greetedConn replays the backend's greeting, read before STARTTLS, to
// go-smtp's client, which reads a greeting before anything else.
type greetedConn struct {
	net.Conn
	greeting []byte
}

func (g *greetedConn) Read(p []byte) (int, error) {
	if len(g.greeting) > 0 {
		n := copy(p, g.greeting)
		g.greeting = g.greeting[n:]
		return n, nil
	}
	return g.Conn.Read(p)
}

// record notes the backend's extensions, and says when they changed: what
// a listener advertises is fixed when it starts, so a backend that lost an
// extension is handled per transaction (the client gets its refusal).
func (c *Client) record(sc *smtp.Client) {
	var caps Capabilities
	caps.SMTPUTF8, _ = sc.Extension("SMTPUTF8")
	caps.DSN, _ = sc.Extension("DSN")
	caps.RequireTLS, _ = sc.Extension("REQUIRETLS")
	if ok, v := sc.Extension("SIZE"); ok {
		caps.Size, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	}
	c.mu.Lock()
	old := c.caps
	c.caps = caps
	c.mu.Unlock()
	if old != caps {
		c.log.Info("backend extensions", zap.Bool("smtputf8", caps.SMTPUTF8), zap.Bool("dsn", caps.DSN),
			zap.Bool("requiretls", caps.RequireTLS), zap.Int64("size", caps.Size))
	}
}

// quit ends the session politely but never waits longer than the timeouts.
func (bc *conn) quit() {
	bc.c.Quit()
	bc.c.Close()
	bc.release()
}

// abort drops the connection without QUIT: an unfinished DATA is discarded by
// the backend because it never sees the final dot.
func (bc *conn) abort() {
	bc.c.Close()
	bc.release()
}

// awaitFinal makes the reads that follow wait up to d for each piece of the
// reply (the final dot's), and returns the function that restores Timeout.
func (bc *conn) awaitFinal(d time.Duration) (restore func()) {
	bc.dl.readTimeout.Store(int64(d))
	return func() { bc.dl.readTimeout.Store(0) }
}

// deadlineConn gives every read and write its own deadline.
type deadlineConn struct {
	net.Conn
	timeout     time.Duration
	readTimeout atomic.Int64 // nanoseconds; 0: timeout
}

func (d *deadlineConn) Read(b []byte) (int, error) {
	t := d.timeout
	if rt := time.Duration(d.readTimeout.Load()); rt > 0 {
		t = rt
	}
	d.Conn.SetReadDeadline(time.Now().Add(t))
	return d.Conn.Read(b)
}

func (d *deadlineConn) Write(b []byte) (int, error) {
	d.Conn.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.Conn.Write(b)
}

// SetDeadline is what go-smtp's client calls around each command; keep our
// per-operation deadlines instead of its "no deadline" reset.
func (d *deadlineConn) SetDeadline(t time.Time) error { return nil }
