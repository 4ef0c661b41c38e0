package e2e

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// smtpConn is a raw SMTP client for tests where the exact bytes matter: it
// writes the lines it is given and reads replies, nothing more.
type smtpConn struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

// reply is one SMTP reply, possibly multi-line.
type reply struct {
	code  int
	lines []string // text after "NNN-" / "NNN "
	raw   string   // as received, CRLFs included
}

const ioTimeout = 30 * time.Second

// dialSMTP connects in plaintext and expects a 220 greeting.
func dialSMTP(t testing.TB, addr string) *smtpConn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c := newSMTPConn(t, conn)
	c.read().expect(t, 220)
	return c
}

// dialImplicitTLS connects with TLS from the first byte (port 465 style) and
// expects a 220 greeting.
func dialImplicitTLS(t testing.TB, addr string, cfg *tls.Config) *smtpConn {
	t.Helper()
	d := &net.Dialer{Timeout: ioTimeout}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("TLS dial %s: %v", addr, err)
	}
	c := newSMTPConn(t, conn)
	c.read().expect(t, 220)
	return c
}

func newSMTPConn(t testing.TB, conn net.Conn) *smtpConn {
	t.Cleanup(func() { conn.Close() })
	return &smtpConn{t: t, conn: conn, r: bufio.NewReader(conn)}
}

// send writes raw bytes as they are (one write, so one packet on loopback).
func (c *smtpConn) send(raw string) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := c.conn.Write([]byte(raw)); err != nil {
		c.t.Fatalf("write %q: %v", abbrev(raw), err)
	}
}

// cmd sends one command line and reads its reply.
func (c *smtpConn) cmd(line string) reply {
	c.t.Helper()
	c.send(line + "\r\n")
	return c.read()
}

// openData runs MAIL FROM:<from>, RCPT TO:<to> and DATA, expecting 250, 250
// and 354: the client may send the message next. For a transaction that may
// be refused, see tryTransaction.
func (c *smtpConn) openData(t testing.TB, from, to string) {
	t.Helper()
	c.cmd("MAIL FROM:<"+from+">").expect(t, 250)
	c.cmd("RCPT TO:<"+to+">").expect(t, 250)
	c.cmd("DATA").expect(t, 354)
}

// read reads one reply; it fails the test on a timeout or a malformed line.
func (c *smtpConn) read() reply {
	c.t.Helper()
	r, err := c.tryRead(ioTimeout)
	if err != nil {
		c.t.Fatalf("reading reply: %v (got so far %q)", err, r.raw)
	}
	return r
}

// tryRead reads one reply within d, returning the error instead of failing.
func (c *smtpConn) tryRead(d time.Duration) (reply, error) {
	var r reply
	c.conn.SetReadDeadline(time.Now().Add(d))
	for {
		line, err := c.r.ReadString('\n')
		r.raw += line
		if err != nil {
			return r, err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 3 {
			return r, fmt.Errorf("malformed reply line %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil || (r.code != 0 && code != r.code) {
			return r, fmt.Errorf("malformed reply line %q", line)
		}
		r.code = code
		if len(line) == 3 {
			r.lines = append(r.lines, "")
			return r, nil
		}
		r.lines = append(r.lines, line[4:])
		if line[3] == ' ' {
			return r, nil
		}
		if line[3] != '-' {
			return r, fmt.Errorf("malformed reply line %q", line)
		}
	}
}

// expectClosed checks that the server closes the connection (after an
// optional last reply), within the timeout.
func (c *smtpConn) expectClosed() {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	b, err := c.r.ReadByte()
	if err == nil {
		rest, _ := c.r.Peek(c.r.Buffered())
		c.t.Fatalf("connection still open, server sent %q", string(b)+string(rest))
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.t.Fatalf("connection still open after %v", ioTimeout)
	}
}

// expectClosedAfterReplies checks that the server hangs up within the
// timeout, having sent at most max reply lines first, none a success
// (refusals, not answers to each line it was sent).
func (c *smtpConn) expectClosedAfterReplies(max int) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	var got []string
	for {
		line, err := c.r.ReadString('\n')
		if line != "" {
			got = append(got, line)
		}
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.t.Fatalf("connection still open after %v; server sent %q", ioTimeout, got)
		}
		break
	}
	if len(got) > max {
		c.t.Errorf("server sent %d lines before closing, want at most %d: %q", len(got), max, got)
	}
	for _, l := range got {
		if l[0] == '2' || l[0] == '3' {
			c.t.Errorf("server accepted something before closing: %q", got)
			break
		}
	}
}

// ehlo sends EHLO and expects 250.
func (c *smtpConn) ehlo(name string) reply {
	c.t.Helper()
	return c.cmd("EHLO "+name).expect(c.t, 250)
}

// startTLS sends STARTTLS, expects 220 and does the handshake.
func (c *smtpConn) startTLS(cfg *tls.Config) *tls.ConnectionState {
	c.t.Helper()
	c.cmd("STARTTLS").expect(c.t, 220)
	return c.handshake(cfg)
}

// handshake upgrades the connection to TLS; whatever was buffered from the
// plaintext phase is dropped, as a careful client would.
func (c *smtpConn) handshake(cfg *tls.Config) *tls.ConnectionState {
	c.t.Helper()
	if n := c.r.Buffered(); n > 0 {
		b, _ := c.r.Peek(n)
		c.t.Fatalf("server sent %q after its 220 to STARTTLS, before the handshake", b)
	}
	tc := tls.Client(c.conn, cfg)
	tc.SetDeadline(time.Now().Add(ioTimeout))
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake after STARTTLS: %v", err)
	}
	tc.SetDeadline(time.Time{})
	c.conn = tc
	c.r = bufio.NewReader(tc)
	st := tc.ConnectionState()
	return &st
}

// authPlain runs AUTH PLAIN with an initial response and returns the reply.
func (c *smtpConn) authPlain(authzid, user, pass string) reply {
	c.t.Helper()
	return c.cmd("AUTH PLAIN " + b64(authzid+"\x00"+user+"\x00"+pass))
}

// authLogin runs AUTH LOGIN (RFC-less but universal): username and password
// each after a 334 challenge.
func (c *smtpConn) authLogin(user, pass string) reply {
	c.t.Helper()
	r := c.cmd("AUTH LOGIN")
	if r.code != 334 {
		return r
	}
	if got, _ := base64.StdEncoding.DecodeString(r.text()); !strings.HasPrefix(strings.ToLower(string(got)), "username") {
		c.t.Errorf("first AUTH LOGIN challenge decodes to %q, want Username:", got)
	}
	c.cmd(b64(user)).expect(c.t, 334)
	return c.cmd(b64(pass))
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// expect fails unless the reply has this code.
func (r reply) expect(t testing.TB, code int) reply {
	t.Helper()
	if r.code != code {
		t.Fatalf("got reply %q, want code %d", r.raw, code)
	}
	return r
}

// expectPrefix fails unless the (last line of the) reply starts with prefix,
// e.g. "550 5.7.1 ".
func (r reply) expectPrefix(t testing.TB, prefix string) reply {
	t.Helper()
	if !strings.HasPrefix(r.last(), prefix) {
		t.Fatalf("got reply %q, want %q...", r.raw, prefix)
	}
	return r
}

// expectClass fails unless the reply code is in this class (2, 4 or 5).
func (r reply) expectClass(t testing.TB, class int) reply {
	t.Helper()
	if r.code/100 != class {
		t.Fatalf("got reply %q, want %dxx", r.raw, class)
	}
	return r
}

// last is the final line as sent, e.g. "250 2.0.0 Ok: queued as X".
func (r reply) last() string {
	if len(r.lines) == 0 {
		return ""
	}
	return fmt.Sprintf("%03d %s", r.code, r.lines[len(r.lines)-1])
}

// text is the reply text, lines joined by spaces.
func (r reply) text() string { return strings.Join(r.lines, " ") }

// enhanced is the RFC 3463 code of the last line, e.g. "5.7.1".
func (r reply) enhanced() string {
	if len(r.lines) == 0 {
		return ""
	}
	f := strings.Fields(r.lines[len(r.lines)-1])
	if len(f) > 0 && strings.Count(f[0], ".") == 2 {
		return f[0]
	}
	return ""
}

// extension returns the EHLO keyword line (e.g. "AUTH PLAIN LOGIN") and
// whether it was advertised; the first line (the greeting name) is skipped.
func (r reply) extension(keyword string) (string, bool) {
	for i, l := range r.lines {
		if i == 0 {
			continue
		}
		if f := strings.Fields(l); len(f) > 0 && strings.EqualFold(f[0], keyword) {
			return l, true
		}
	}
	return "", false
}

func abbrev(s string) string {
	if len(s) > 200 {
		return s[:200] + "..."
	}
	return s
}
