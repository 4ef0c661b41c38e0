// Package mailwire is the low-level IMAP (RFC 9051, RFC 3501) and POP3
// (RFC 1939) client with which tlsguard logs in to a mailbox server,
// wherever it does: the IMAP and POP3 credential sources (internal/auth)
// check a password by logging in and out again, and the mailbox guard's
// backend leg (internal/mailbox) logs in with the credentials its client
// gave, then copies bytes. It speaks only what a login needs: greeting,
// STARTTLS/STLS, capabilities, AUTHENTICATE PLAIN or LOGIN (IMAP), AUTH
// PLAIN or USER/PASS (POP3), LOGOUT/QUIT; a full IMAP library (go-imap v2)
// would bring mailbox parsing tlsguard never uses.
//
// Its errors keep apart what callers must never confuse: ErrRefused, the
// server's definite no to the credentials, and every other error (the
// server down, slow, or not speaking the protocol), which callers turn
// into a temporary failure. Lines are read through internal/smtpwire,
// bounded in length and in number per response, and every read and write
// has its own deadline, within the deadline of the context given to the
// login, if any. Errors name the server and quote its lines, never a
// command tlsguard sent (they carry the password).
package mailwire

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/tlsguard/tlsguard/internal/smtpwire"
)

// ErrRefused is the server's definite no to the user name and password. A
// mailbox server does not tell an unknown user from a wrong password (both
// are NO [AUTHENTICATIONFAILED], RFC 5530; -ERR [AUTH], RFC 3206).
var ErrRefused = errors.New("login refused")

// TLS modes towards the server.
const (
	TLSNone     = "none"
	TLSStartTLS = "starttls" // STARTTLS (IMAP, RFC 9051 6.2.1), STLS (POP3, RFC 2595 4)
	TLSImplicit = "implicit" // RFC 8314
)

// Bounds on what a server can make a login hold: a line (RFC 2683
// 3.2.1.5 suggests 8000 octets for IMAP) and the lines of one response
// (untagged lines before the tagged one, a CAPA list).
const (
	maxLine  = 8192
	maxLines = 100
)

// Config is one mailbox server.
type Config struct {
	// Address is host:port.
	Address string
	// TLS is TLSNone, TLSStartTLS or TLSImplicit.
	TLS string
	// TLSConfig verifies the server's certificate (starttls, implicit).
	TLSConfig *tls.Config
	// Timeout bounds each step: connecting (with implicit TLS), each read
	// and write, a STARTTLS handshake. It must be set.
	Timeout time.Duration
}

// Login is the server's answer to a login that succeeded, for a caller that
// passes it on to its own client.
type Login struct {
	// Untagged are IMAP's untagged responses to the login command (a
	// CAPABILITY, say), without CRLF; POP3 has none.
	Untagged []string
	// OK is, for IMAP, the tagged OK without its tag ("OK [CAPABILITY ...]
	// Logged in"); for POP3, the +OK line.
	OK string
}

// Conn is a connection on which a login succeeded.
type Conn struct {
	w        *smtpwire.Conn
	proto    string // "imap" or "pop3", for errors
	addr     string
	timeout  time.Duration
	deadline time.Time // the login context's, bounding every step; zero: none
	bye      string    // LOGOUT or QUIT
}

func dial(ctx context.Context, proto string, cfg Config) (*Conn, error) {
	c := &Conn{proto: proto, addr: cfg.Address, timeout: cfg.Timeout}
	switch {
	case cfg.Timeout <= 0:
		return nil, c.errorf("no timeout set")
	case cfg.TLS != TLSNone && cfg.TLS != TLSStartTLS && cfg.TLS != TLSImplicit:
		return nil, c.errorf("tls %q is not one of none, starttls, implicit", cfg.TLS)
	}
	c.deadline, _ = ctx.Deadline()
	ctx, cancel := context.WithDeadline(ctx, c.next())
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", cfg.Address)
	if err != nil {
		return nil, c.errorf("%w", err)
	}
	c.w = smtpwire.New(nc, 0) // deadlines are set here, by arm
	c.w.SetMaxLine(maxLine)
	if cfg.TLS == TLSImplicit {
		if err := c.upgrade(ctx, cfg.TLSConfig); err != nil {
			nc.Close()
			return nil, err
		}
	}
	return c, nil
}

// next is the deadline of the next step.
func (c *Conn) next() time.Time {
	d := time.Now().Add(c.timeout)
	if !c.deadline.IsZero() && c.deadline.Before(d) {
		return c.deadline
	}
	return d
}

func (c *Conn) arm() { c.w.NetConn().SetDeadline(c.next()) }

func (c *Conn) errorf(format string, args ...any) error {
	return fmt.Errorf("%s %s: "+format, append([]any{c.proto, c.addr}, args...)...)
}

// refused is ErrRefused with the server's line.
func (c *Conn) refused(line string) error {
	return c.errorf("%w: %s", ErrRefused, trim(line))
}

// line reads one line, without its CRLF.
func (c *Conn) line() (string, error) {
	c.arm()
	l, err := c.w.ReadLine()
	if err != nil {
		return "", c.errorf("reading: %w", err)
	}
	return l, nil
}

// send writes one line, CRLF added.
func (c *Conn) send(line string) error {
	c.arm()
	if err := c.w.WriteLine(line); err != nil {
		return c.errorf("writing: %w", err)
	}
	return nil
}

// write sends s as it is (a literal's bytes).
func (c *Conn) write(s string) error {
	c.arm()
	if _, err := c.w.Write([]byte(s)); err != nil {
		return c.errorf("writing: %w", err)
	}
	return nil
}

// upgrade does the TLS handshake. Bytes the server sent before it in
// plaintext are dropped with the old reader: read as if they came through
// TLS they would be an injection (CVE-2011-0411's class).
func (c *Conn) upgrade(ctx context.Context, cfg *tls.Config) error {
	ctx, cancel := context.WithDeadline(ctx, c.next())
	defer cancel()
	c.arm()
	if _, err := c.w.Upgrade(ctx, cfg); err != nil {
		return c.errorf("TLS: %w", err)
	}
	return nil
}

// Logout says goodbye (LOGOUT, QUIT) without waiting for the answer and
// closes the connection.
func (c *Conn) Logout() {
	c.send(c.bye)
	c.w.Close()
}

// Close closes the connection without a goodbye.
func (c *Conn) Close() error { return c.w.Close() }

// Detach hands over the connection, with the login's deadlines cleared,
// and the reader that may already hold the server's next bytes, to a
// caller that copies bytes from now on.
func (c *Conn) Detach() (net.Conn, *bufio.Reader) {
	nc := c.w.NetConn()
	nc.SetDeadline(time.Time{})
	return nc, c.w.Reader()
}

// login dials and runs steps; on success the caller owns the connection,
// which says bye when logged out.
func login(ctx context.Context, proto, bye string, cfg Config, user, pass string, steps func(*Conn, context.Context, Config, string, string) (Login, error)) (*Conn, Login, error) {
	if err := checkCredentials(proto, cfg, user, pass); err != nil {
		return nil, Login{}, err
	}
	c, err := dial(ctx, proto, cfg)
	if err != nil {
		return nil, Login{}, err
	}
	c.bye = bye
	l, err := steps(c, ctx, cfg, user, pass)
	if err != nil {
		c.Close()
		return nil, Login{}, err
	}
	return c, l, nil
}

// checkCredentials refuses what no login can carry: a NUL splits a SASL
// PLAIN response (RFC 4616 2) and is no IMAP literal's CHAR8 (RFC 9051 9).
func checkCredentials(proto string, cfg Config, user, pass string) error {
	if strings.ContainsRune(user+pass, 0) {
		return fmt.Errorf("%s %s: %w: NUL in the user name or password", proto, cfg.Address, ErrRefused)
	}
	return nil
}

// plainResponse is the SASL PLAIN response (RFC 4616), no authorization
// identity.
func plainResponse(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

// trim shortens a server's line for an error message.
func trim(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}
