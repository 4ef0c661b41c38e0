// Package smtpwire is the low-level SMTP client tlsguard's tools share (the
// audit, the load generator, the backend leg's STARTTLS): lines and
// replies as they are on the wire, multi-line replies (RFC 5321 4.2.1),
// pipelined commands (RFC 2920) and STARTTLS (RFC 3207) with the check that
// nothing follows the 220 in plaintext. Every read and write has its own
// deadline, so a slow but moving peer is never cut off and a silent one
// always is. It keeps no protocol state: the caller drives the dialogue.
package smtpwire

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Bounds on what a peer can make us hold: a line (RFC 5321 4.5.3.1.5 allows
// 512 octets for a reply line; IMAP and POP3 lines are longer) and the lines
// of one reply.
const (
	maxLine       = 64 << 10
	maxReplyLines = 100
)

// Errors of a peer that does not speak the protocol.
var (
	ErrLineTooLong       = errors.New("line too long")
	ErrTooManyLines      = errors.New("reply has too many lines")
	ErrPlaintextInjected = errors.New("plaintext after the 220 reply")
)

// Reply is one SMTP reply: its code and the text of each line.
type Reply struct {
	Code  int
	Lines []string
}

// Text is the reply's lines joined with "\n", as net/textproto gives them.
func (r Reply) Text() string { return strings.Join(r.Lines, "\n") }

// HandshakeError is a TLS handshake that failed after the server agreed to
// STARTTLS: the server's TLS, not its SMTP, is at fault.
type HandshakeError struct{ Err error }

func (e *HandshakeError) Error() string { return "TLS handshake: " + e.Err.Error() }
func (e *HandshakeError) Unwrap() error { return e.Err }

// ReplyError is a reply other than the one expected.
type ReplyError struct{ Reply }

func (e *ReplyError) Error() string {
	return fmt.Sprintf("%d %s", e.Code, strings.Join(e.Lines, " / "))
}

// Conn is one client connection to an SMTP (or another line-oriented)
// server.
type Conn struct {
	nc      net.Conn
	r       *bufio.Reader
	timeout time.Duration
	maxLine int
	out     []byte // scratch for building lines
}

// New wraps nc; every read and write gets timeout as its own deadline (0:
// the caller manages deadlines).
func New(nc net.Conn, timeout time.Duration) *Conn {
	return &Conn{nc: nc, r: bufio.NewReaderSize(nc, 4096), timeout: timeout, maxLine: maxLine}
}

// SetMaxLine sets the longest line a read accepts, its line ending
// included (64 KiB by default), for a protocol whose lines are shorter.
func (c *Conn) SetMaxLine(n int) { c.maxLine = n }

// Reader is the buffered reader underneath, holding what the peer sent
// that was not read yet, for a caller that copies the rest of the stream
// itself.
func (c *Conn) Reader() *bufio.Reader { return c.r }

// NetConn is the connection underneath: TLS after StartTLS or Upgrade.
func (c *Conn) NetConn() net.Conn { return c.nc }

// Close closes the connection without a goodbye.
func (c *Conn) Close() error { return c.nc.Close() }

// SetTimeout changes the deadline every read and write gets from now on.
func (c *Conn) SetTimeout(d time.Duration) { c.timeout = d }

// Arm sets the deadline of the next read or write.
func (c *Conn) Arm() {
	if c.timeout > 0 {
		c.nc.SetDeadline(time.Now().Add(c.timeout))
	}
}

// Buffered is how many bytes the peer sent that were not read yet.
func (c *Conn) Buffered() int { return c.r.Buffered() }

// Write sends p as it is (a message body), under the deadline.
func (c *Conn) Write(p []byte) (int, error) {
	c.Arm()
	return c.nc.Write(p)
}

// WriteLine sends one line, CRLF added.
func (c *Conn) WriteLine(line string) error { return c.Pipeline(line) }

// Pipeline sends lines in one write (RFC 2920: a client may send a group
// of commands without waiting; read one reply per command after).
func (c *Conn) Pipeline(lines ...string) error {
	c.out = c.out[:0]
	for _, l := range lines {
		c.out = append(append(c.out, l...), '\r', '\n')
	}
	_, err := c.Write(c.out)
	return err
}

// ReadLine reads one line, its CRLF (or bare LF) removed.
func (c *Conn) ReadLine() (string, error) {
	b, err := c.readLine()
	return string(b), err
}

// readLine returns a line valid until the next read.
func (c *Conn) readLine() ([]byte, error) {
	c.Arm()
	l, err := c.r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) {
		long := append([]byte(nil), l...)
		for errors.Is(err, bufio.ErrBufferFull) && len(long) <= c.maxLine {
			c.Arm()
			l, err = c.r.ReadSlice('\n')
			long = append(long, l...)
		}
		l = long
	}
	if len(l) > c.maxLine {
		return nil, ErrLineTooLong
	}
	if err != nil {
		return nil, err
	}
	l = l[:len(l)-1]
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1]
	}
	return l, nil
}

// ReadReply reads one reply, multi-line or not: "250-" lines continue it,
// the "250 " line ends it; every line must carry the same code.
func (c *Conn) ReadReply() (Reply, error) {
	var r Reply
	for {
		l, err := c.readLine()
		if err != nil {
			return r, err
		}
		if len(l) < 3 || (len(l) > 3 && l[3] != ' ' && l[3] != '-') {
			return r, fmt.Errorf("malformed reply %q", l)
		}
		code, err := strconv.Atoi(string(l[:3]))
		if err != nil || code < 100 {
			return r, fmt.Errorf("malformed reply %q", l)
		}
		if r.Lines != nil && code != r.Code {
			return r, fmt.Errorf("reply code changed within a reply: %q", l)
		}
		r.Code = code
		text := ""
		if len(l) > 4 {
			text = string(l[4:])
		}
		r.Lines = append(r.Lines, text)
		if len(l) == 3 || l[3] == ' ' {
			return r, nil
		}
		if len(r.Lines) >= maxReplyLines {
			return r, ErrTooManyLines
		}
	}
}

// Expect reads one reply; a code other than want is a *ReplyError.
func (c *Conn) Expect(want int) (Reply, error) {
	r, err := c.ReadReply()
	if err == nil && r.Code != want {
		err = &ReplyError{r}
	}
	return r, err
}

// Cmd sends one command and reads its reply.
func (c *Conn) Cmd(line string) (Reply, error) {
	if err := c.WriteLine(line); err != nil {
		return Reply{}, err
	}
	return c.ReadReply()
}

// Extensions are the keywords of an EHLO reply (upper case) and their
// parameters (RFC 5321 4.1.1.1: the first line is the greeting).
func Extensions(ehlo Reply) map[string]string {
	ext := make(map[string]string, len(ehlo.Lines))
	for _, l := range ehlo.Lines[min(1, len(ehlo.Lines)):] {
		k, v, _ := strings.Cut(strings.TrimSpace(l), " ")
		ext[strings.ToUpper(k)] = v
	}
	return ext
}

// StartTLS sends STARTTLS and, after its 220, does the handshake (RFC 3207
// 4). A server that sent anything behind the 220 is refused before the
// handshake: those bytes would be read as if they came through TLS
// (STARTTLS command injection, CVE-2011-0411). A reply other than 220 is a
// *ReplyError, a failed handshake a *HandshakeError.
func (c *Conn) StartTLS(ctx context.Context, cfg *tls.Config) (*tls.Conn, error) {
	if err := c.WriteLine("STARTTLS"); err != nil {
		return nil, err
	}
	if _, err := c.Expect(220); err != nil {
		return nil, err
	}
	if c.Buffered() > 0 {
		return nil, ErrPlaintextInjected
	}
	tc, err := c.Upgrade(ctx, cfg)
	if err != nil {
		return nil, &HandshakeError{err}
	}
	return tc, nil
}

// Upgrade does a TLS client handshake on the connection, bounded by the
// timeout and ctx, and reads and writes through TLS from then on.
func (c *Conn) Upgrade(ctx context.Context, cfg *tls.Config) (*tls.Conn, error) {
	tc := tls.Client(c.nc, cfg)
	if c.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout)
		defer cancel()
	}
	c.Arm()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	c.nc = tc
	c.r.Reset(tc)
	return tc, nil
}
