package auth

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/tlsguard/tlsguard/internal/mailwire"
)

// MailboxConfig is a mailbox server (IMAP or POP3) that already holds the
// users' passwords. For a source, Timeout bounds the whole login (default
// 5s), and TLS defaults to starttls.
type MailboxConfig = mailwire.Config

// IMAP checks passwords by logging in to an IMAP server and out again
// (internal/mailwire: AUTHENTICATE PLAIN where offered, else LOGIN).
type IMAP struct{ cfg MailboxConfig }

// POP3 checks passwords by logging in to a POP3 server and out again
// (internal/mailwire: AUTH PLAIN where CAPA lists it, else USER/PASS).
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
		cfg.TLS = mailwire.TLSStartTLS
	}
	return cfg
}

// Authenticate implements Source.
func (s *IMAP) Authenticate(ctx context.Context, user, password string) (Identity, error) {
	return mailboxLogin(ctx, s.cfg, mailwire.LoginIMAP, user, password)
}

// Authenticate implements Source.
func (s *POP3) Authenticate(ctx context.Context, user, password string) (Identity, error) {
	return mailboxLogin(ctx, s.cfg, mailwire.LoginPOP3, user, password)
}

// mailboxLogin logs in with login and out again. The server's refusal is a
// wrong password; any other error (down, timed out, TLS, a confused
// server) is temporary, so that the throttle never counts it as a guess.
func mailboxLogin(ctx context.Context, cfg MailboxConfig, login func(context.Context, mailwire.Config, string, string) (*mailwire.Conn, mailwire.Login, error), user, password string) (Identity, error) {
	if password == "" {
		return Identity{}, ErrBadPassword
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	c, _, err := login(ctx, cfg, user, password)
	switch {
	case errors.Is(err, mailwire.ErrRefused):
		return Identity{}, fmt.Errorf("%w: %w", ErrBadPassword, err)
	case err != nil:
		return Identity{}, err
	}
	c.Logout()
	return Identity{User: user}, nil
}
