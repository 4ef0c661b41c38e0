package audit

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/textproto"
	"os"
	"strings"
	"syscall"
	"time"
)

// conn is a line-oriented client connection (SMTP, IMAP or POP3) in which
// every read and write has its own deadline, and which can be upgraded to
// TLS in place.
type conn struct {
	nc      net.Conn
	text    *textproto.Conn
	timeout time.Duration
	stop    func() bool // detaches the context watcher
}

// errDialTimeout and errRefused classify dial failures for the report.
var (
	errRefused     = errors.New("connection refused")
	errDialTimeout = errors.New("no answer")
)

// dial connects to addr. A cancelled ctx breaks any blocked read or write.
func dial(ctx context.Context, addr string, timeout time.Duration) (*conn, error) {
	d := net.Dialer{Timeout: timeout}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return nil, fmt.Errorf("%s: %w", addr, errRefused)
		case errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err):
			return nil, fmt.Errorf("%s: %w after %s", addr, errDialTimeout, timeout)
		}
		return nil, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	c := &conn{nc: nc, timeout: timeout}
	c.text = textproto.NewConn(nc)
	c.stop = context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	return c, nil
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Close closes the connection without a goodbye.
func (c *conn) Close() error {
	c.stop()
	return c.nc.Close()
}

func (c *conn) arm() { c.nc.SetDeadline(time.Now().Add(c.timeout)) }

// localLiteral is the EHLO address literal of our end of the connection.
func (c *conn) localLiteral() string {
	ap, err := netip.ParseAddrPort(c.nc.LocalAddr().String())
	if err != nil {
		return "[127.0.0.1]"
	}
	return addrLiteral(ap.Addr())
}

// writeLine sends one line, CRLF added.
func (c *conn) writeLine(format string, args ...any) error {
	c.arm()
	if err := c.text.PrintfLine(format, args...); err != nil {
		return fmt.Errorf("writing to %s: %w", c.nc.RemoteAddr(), err)
	}
	return nil
}

// readLine reads one line, CRLF removed.
func (c *conn) readLine() (string, error) {
	c.arm()
	line, err := c.text.ReadLine()
	if err != nil {
		return "", fmt.Errorf("reading from %s: %w", c.nc.RemoteAddr(), err)
	}
	return line, nil
}

// smtpReply reads one SMTP reply, multi-line or not (RFC 5321 4.2.1). The
// text of continuation lines is joined with "\n".
func (c *conn) smtpReply() (int, string, error) {
	c.arm()
	code, msg, err := c.text.ReadResponse(0)
	if err != nil {
		return code, msg, fmt.Errorf("reading reply from %s: %w", c.nc.RemoteAddr(), err)
	}
	return code, msg, nil
}

// smtpCmd sends one SMTP command and reads its reply.
func (c *conn) smtpCmd(format string, args ...any) (int, string, error) {
	if err := c.writeLine(format, args...); err != nil {
		return 0, "", err
	}
	return c.smtpReply()
}

// startTLS runs a TLS client handshake over the connection, bounded by the
// timeout, and replaces the reader and writer with the encrypted ones.
func (c *conn) startTLS(ctx context.Context, cfg *tls.Config) (tls.ConnectionState, error) {
	tc := tls.Client(c.nc, cfg)
	hctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	c.nc.SetDeadline(time.Now().Add(c.timeout))
	if err := tc.HandshakeContext(hctx); err != nil {
		return tls.ConnectionState{}, fmt.Errorf("TLS handshake with %s: %w", c.nc.RemoteAddr(), err)
	}
	c.stop()
	c.nc = tc
	c.text = textproto.NewConn(tc)
	c.stop = context.AfterFunc(ctx, func() { tc.NetConn().SetDeadline(time.Unix(1, 0)) })
	return tc.ConnectionState(), nil
}

// buffered reports whether the server sent bytes we have not read yet; used
// to notice a reply to STARTTLS followed by more plaintext.
func (c *conn) buffered() int {
	return c.text.R.Buffered()
}

// describeDialError turns a dial error into the detail of a port finding.
func describeDialError(err error) string {
	switch {
	case errors.Is(err, errRefused):
		return "closed (connection refused)"
	case errors.Is(err, errDialTimeout):
		_, after, _ := strings.Cut(err.Error(), ": ")
		return after + " (filtered, or blocked on the way)"
	}
	return err.Error()
}
