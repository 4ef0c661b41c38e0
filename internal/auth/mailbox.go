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
// STARTTLS/STLS, capabilities, AUTHENTICATE PLAIN or LOGIN (IMAP), AUTH
// PLAIN or USER/PASS (POP3), LOGOUT/QUIT. A full IMAP
// library (go-imap v2) would bring mailbox parsing tlsguard never uses.

// IMAP checks passwords against an IMAP server with AUTHENTICATE PLAIN
// (RFC 3501 6.2.2, RFC 4616) where offered, else LOGIN. A mailbox server does not tell an unknown user
// from a wrong password (both are NO [AUTHENTICATIONFAILED], RFC 5530), so
// its NO is a wrong password.
type IMAP struct{ cfg MailboxConfig }

// POP3 checks passwords against a POP3 server with AUTH PLAIN (RFC 5034)
// where CAPA lists it, else USER/PASS;
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
	// Capabilities change with TLS (RFC 3501 6.2.1), so ask now.
	caps, err := s.capabilities(m)
	if err != nil {
		return fmt.Errorf("CAPABILITY: %w", err)
	}
	switch {
	case caps["AUTH=PLAIN"]:
		err = s.authenticatePlain(m, user, password, caps["SASL-IR"])
	case caps["LOGINDISABLED"]:
		return errors.New("the server offers neither AUTH=PLAIN nor LOGIN (LOGINDISABLED)")
	default:
		err = s.loginCommand(m, user, password)
	}
	if err == nil {
		m.send("a9 LOGOUT")
	}
	return err
}

// capabilities returns the server's CAPABILITY words, upper case.
func (s *IMAP) capabilities(m *mailboxConn) (map[string]bool, error) {
	if err := m.send("a2 CAPABILITY"); err != nil {
		return nil, err
	}
	caps := map[string]bool{}
	for {
		l, err := m.line()
		if err != nil {
			return nil, err
		}
		if rest, ok := strings.CutPrefix(l, "* CAPABILITY "); ok {
			for _, w := range strings.Fields(rest) {
				caps[strings.ToUpper(w)] = true
			}
			continue
		}
		if rest, ok := strings.CutPrefix(l, "a2 "); ok {
			if !strings.HasPrefix(rest, "OK") {
				return nil, fmt.Errorf("%q", trim(rest))
			}
			return caps, nil
		}
	}
}

// authenticatePlain runs AUTHENTICATE PLAIN, with the response on the
// command line where the server offers SASL-IR (RFC 4959).
func (s *IMAP) authenticatePlain(m *mailboxConn, user, password string, ir bool) error {
	if ir {
		_, err := s.command(m, "a3 AUTHENTICATE PLAIN "+plainResponse(user, password), "a3")
		return err
	}
	if err := m.send("a3 AUTHENTICATE PLAIN"); err != nil {
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
	_, err = s.command(m, "", "a3")
	return err
}

// loginCommand runs LOGIN with both arguments as synchronizing literals
// (RFC 3501 4.3), which carry any character a quoted string cannot.
func (s *IMAP) loginCommand(m *mailboxConn, user, password string) error {
	lit := func(prefix, v, suffix string) error {
		if err := m.send(fmt.Sprintf("%s{%d}", prefix, len(v))); err != nil {
			return err
		}
		l, err := m.line()
		if err != nil {
			return err
		}
		if !strings.HasPrefix(l, "+") {
			if rest, ok := strings.CutPrefix(l, "a3 "); ok && strings.HasPrefix(rest, "NO") {
				return fmt.Errorf("%s: %w", trim(rest), ErrBadPassword)
			}
			return fmt.Errorf("LOGIN: %q", trim(l))
		}
		_, err = m.c.Write([]byte(v + suffix))
		return err
	}
	if err := lit("a3 LOGIN ", user, ""); err != nil {
		return err
	}
	if err := lit(" ", password, "\r\n"); err != nil {
		return err
	}
	_, err := s.command(m, "", "a3")
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
			if (cmd == "" || tag == "a3") && !strings.Contains(rest, "[UNAVAILABLE]") && !strings.Contains(rest, "[SERVERBUG]") {
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
	plain, err := s.offersPlain(m)
	if err != nil {
		return fmt.Errorf("CAPA: %w", err)
	}
	if plain {
		if err := m.send("AUTH PLAIN " + plainResponse(user, password)); err != nil {
			return err
		}
	} else {
		// USER/PASS (RFC 1939 7): the one login every POP3 server has.
		if strings.ContainsAny(user+password, "\r\n") {
			return ErrBadPassword
		}
		if err := m.send("USER " + user); err != nil {
			return err
		}
		if _, err := s.reply(m, true); err != nil {
			return err
		}
		if err := m.send("PASS " + password); err != nil {
			return err
		}
	}
	if _, err := s.reply(m, true); err != nil {
		return err
	}
	m.send("QUIT")
	return nil
}

// offersPlain asks CAPA (RFC 2449) whether SASL PLAIN is offered; a server
// without CAPA offers only USER/PASS.
func (s *POP3) offersPlain(m *mailboxConn) (bool, error) {
	if err := m.send("CAPA"); err != nil {
		return false, err
	}
	first, err := m.line()
	if err != nil {
		return false, err
	}
	if !strings.HasPrefix(first, "+OK") {
		return false, nil
	}
	plain := false
	for {
		l, err := m.line()
		if err != nil {
			return false, err
		}
		if l == "." {
			return plain, nil
		}
		f := strings.Fields(strings.ToUpper(l))
		if len(f) > 0 && f[0] == "SASL" {
			for _, mech := range f[1:] {
				plain = plain || mech == "PLAIN"
			}
		}
	}
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
