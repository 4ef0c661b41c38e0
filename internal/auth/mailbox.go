package auth

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
)

// MailboxConfig is a mailbox server (IMAP or POP3) that already holds the
// users' passwords.
type MailboxConfig struct {
	// Address is host:port.
	Address string
	// TLS is "none", "starttls" or "implicit".
	TLS string
	// TLSConfig verifies the server's certificate (starttls, implicit).
	TLSConfig *tls.Config
	// Timeout bounds the whole login (default 5s).
	Timeout time.Duration
}

// The small clients below speak only what a login needs: greeting,
// STARTTLS/STLS, AUTHENTICATE PLAIN/AUTH PLAIN, LOGOUT/QUIT. A full IMAP
// library (go-imap v2) would bring mailbox parsing tlsguard never uses.

// IMAP checks passwords with AUTHENTICATE PLAIN (RFC 3501 6.2.2, RFC 4616)
// against an IMAP server. A mailbox server does not tell an unknown user
// from a wrong password (both are NO [AUTHENTICATIONFAILED], RFC 5530), so
// its NO is a wrong password.
type IMAP struct{ cfg MailboxConfig }

// POP3 checks passwords with AUTH PLAIN (RFC 5034) against a POP3 server;
// -ERR [SYS/TEMP] (RFC 3206) is a temporary failure, any other -ERR a wrong
// password.
type POP3 struct{ cfg MailboxConfig }

var (
	_ Source = (*IMAP)(nil)
	_ Source = (*POP3)(nil)
)

// NewIMAP returns the source.
func NewIMAP(cfg MailboxConfig) *IMAP { return &IMAP{cfg: mailboxDefaults(cfg)} }

// NewPOP3 returns the source.
func NewPOP3(cfg MailboxConfig) *POP3 { return &POP3{cfg: mailboxDefaults(cfg)} }

func mailboxDefaults(cfg MailboxConfig) MailboxConfig {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.TLS == "" {
		cfg.TLS = "starttls"
	}
	return cfg
}

// mailboxConn is one line-oriented connection with a deadline.
type mailboxConn struct {
	c   net.Conn
	r   *bufio.Reader
	cfg MailboxConfig
}

func dialMailbox(ctx context.Context, cfg MailboxConfig) (*mailboxConn, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", cfg.Address)
	if err != nil {
		return nil, err
	}
	dl, _ := ctx.Deadline()
	c.SetDeadline(dl)
	if cfg.TLS == "implicit" {
		tc := tls.Client(c, cfg.TLSConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, fmt.Errorf("TLS: %w", err)
		}
		c = tc
	}
	return &mailboxConn{c: c, r: bufio.NewReaderSize(c, 1024), cfg: cfg}, nil
}

// line reads one line, bounded so that a hostile server cannot grow memory.
func (m *mailboxConn) line() (string, error) {
	var b []byte
	for {
		chunk, more, err := m.r.ReadLine()
		if err != nil {
			return "", err
		}
		if len(b)+len(chunk) > 8192 {
			return "", errors.New("reply line too long")
		}
		b = append(b, chunk...)
		if !more {
			return string(b), nil
		}
	}
}

func (m *mailboxConn) send(s string) error {
	_, err := m.c.Write([]byte(s + "\r\n"))
	return err
}

func (m *mailboxConn) startTLS() error {
	tc := tls.Client(m.c, m.cfg.TLSConfig)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("TLS: %w", err)
	}
	m.c, m.r = tc, bufio.NewReaderSize(tc, 1024)
	return nil
}

func plainResponse(user, password string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + password))
}

// Authenticate implements Source.
func (s *IMAP) Authenticate(ctx context.Context, user, password string) (Identity, error) {
	if password == "" {
		return Identity{}, ErrBadPassword
	}
	m, err := dialMailbox(ctx, s.cfg)
	if err != nil {
		return Identity{}, fmt.Errorf("imap %s: %w", s.cfg.Address, err)
	}
	defer m.c.Close()
	err = s.login(m, user, password)
	if err != nil && !errors.Is(err, ErrBadPassword) {
		return Identity{}, fmt.Errorf("imap %s: %w", s.cfg.Address, err)
	}
	if err != nil {
		return Identity{}, err
	}
	return Identity{User: user}, nil
}

func (s *IMAP) login(m *mailboxConn, user, password string) error {
	greet, err := m.line()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(greet, "* OK") {
		return fmt.Errorf("greeting %q", trim(greet))
	}
	if s.cfg.TLS == "starttls" {
		if _, err := s.command(m, "a1 STARTTLS", "a1"); err != nil {
			return fmt.Errorf("STARTTLS: %w", err)
		}
		if err := m.startTLS(); err != nil {
			return err
		}
	}
	if err := m.send("a2 AUTHENTICATE PLAIN"); err != nil {
		return err
	}
	l, err := m.line()
	if err != nil {
		return err
	}
	if !strings.HasPrefix(l, "+") {
		return fmt.Errorf("AUTHENTICATE PLAIN: %q", trim(l))
	}
	if err := m.send(plainResponse(user, password)); err != nil {
		return err
	}
	_, err = s.command(m, "", "a2")
	if err == nil {
		m.send("a3 LOGOUT")
	}
	return err
}

// command sends cmd (unless empty) and reads up to the tagged reply: OK is
// nil, NO is a wrong password unless its response code says the server is
// unavailable (RFC 5530), anything else an error.
func (s *IMAP) command(m *mailboxConn, cmd, tag string) (string, error) {
	if cmd != "" {
		if err := m.send(cmd); err != nil {
			return "", err
		}
	}
	for {
		l, err := m.line()
		if err != nil {
			return "", err
		}
		rest, ok := strings.CutPrefix(l, tag+" ")
		if !ok {
			continue
		}
		switch {
		case strings.HasPrefix(rest, "OK"):
			return rest, nil
		case strings.HasPrefix(rest, "NO"):
			if cmd == "" && !strings.Contains(rest, "[UNAVAILABLE]") && !strings.Contains(rest, "[SERVERBUG]") {
				return "", fmt.Errorf("%s: %w", trim(rest), ErrBadPassword)
			}
		}
		return "", fmt.Errorf("%q", trim(rest))
	}
}

// Authenticate implements Source.
func (s *POP3) Authenticate(ctx context.Context, user, password string) (Identity, error) {
	if password == "" {
		return Identity{}, ErrBadPassword
	}
	m, err := dialMailbox(ctx, s.cfg)
	if err != nil {
		return Identity{}, fmt.Errorf("pop3 %s: %w", s.cfg.Address, err)
	}
	defer m.c.Close()
	err = s.login(m, user, password)
	if err != nil && !errors.Is(err, ErrBadPassword) {
		return Identity{}, fmt.Errorf("pop3 %s: %w", s.cfg.Address, err)
	}
	if err != nil {
		return Identity{}, err
	}
	return Identity{User: user}, nil
}

func (s *POP3) login(m *mailboxConn, user, password string) error {
	if _, err := s.reply(m, false); err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	if s.cfg.TLS == "starttls" {
		if err := m.send("STLS"); err != nil {
			return err
		}
		if _, err := s.reply(m, false); err != nil {
			return fmt.Errorf("STLS: %w", err)
		}
		if err := m.startTLS(); err != nil {
			return err
		}
	}
	if err := m.send("AUTH PLAIN " + plainResponse(user, password)); err != nil {
		return err
	}
	if _, err := s.reply(m, true); err != nil {
		return err
	}
	m.send("QUIT")
	return nil
}

// reply reads one +OK/-ERR line; at login a -ERR is a wrong password unless
// it carries [SYS/TEMP] (RFC 3206).
func (s *POP3) reply(m *mailboxConn, login bool) (string, error) {
	l, err := m.line()
	if err != nil {
		return "", err
	}
	switch {
	case strings.HasPrefix(l, "+OK"):
		return l, nil
	case login && strings.HasPrefix(l, "-ERR") && !strings.Contains(l, "[SYS/TEMP]"):
		return "", fmt.Errorf("%s: %w", trim(l), ErrBadPassword)
	}
	return "", fmt.Errorf("%q", trim(l))
}

// trim shortens a server's line for an error message.
func trim(s string) string {
	if len(s) > 120 {
		return s[:120] + "..."
	}
	return s
}
