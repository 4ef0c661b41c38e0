package audit

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/tlsguard/tlsguard/internal/smtpwire"
)

// conn is a line-oriented client connection (SMTP, IMAP or POP3) in which
// every read and write has its own deadline, and which can be upgraded to
// TLS in place. The wire work is internal/smtpwire's.
type conn struct {
	nc      net.Conn // w's connection: TLS once up
	w       *smtpwire.Conn
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
	c := &conn{nc: nc, w: smtpwire.New(nc, timeout), timeout: timeout}
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
	if err := c.w.WriteLine(fmt.Sprintf(format, args...)); err != nil {
		return fmt.Errorf("writing to %s: %w", c.nc.RemoteAddr(), err)
	}
	return nil
}

// readLine reads one line, CRLF removed.
func (c *conn) readLine() (string, error) {
	line, err := c.w.ReadLine()
	if err != nil {
		return "", fmt.Errorf("reading from %s: %w", c.nc.RemoteAddr(), err)
	}
	return line, nil
}

// smtpReply reads one SMTP reply, multi-line or not (RFC 5321 4.2.1). The
// text of continuation lines is joined with "\n".
func (c *conn) smtpReply() (int, string, error) {
	r, err := c.w.ReadReply()
	if err != nil {
		return r.Code, r.Text(), fmt.Errorf("reading reply from %s: %w", c.nc.RemoteAddr(), err)
	}
	return r.Code, r.Text(), nil
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
	tc, err := c.w.Upgrade(ctx, cfg)
	if err != nil {
		return tls.ConnectionState{}, fmt.Errorf("TLS handshake with %s: %w", c.nc.RemoteAddr(), err)
	}
	c.stop()
	c.nc = tc
	c.stop = context.AfterFunc(ctx, func() { tc.NetConn().SetDeadline(time.Unix(1, 0)) })
	return tc.ConnectionState(), nil
}

// buffered reports whether the server sent bytes we have not read yet; used
// to notice a reply to STARTTLS followed by more plaintext.
func (c *conn) buffered() int {
	return c.w.Buffered()
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
