package mailwire

import (
	"context"
	"strings"
)

// LoginPOP3 connects to cfg.Address, with TLS as configured, and logs in as
// user with AUTH PLAIN (RFC 5034) where CAPA (RFC 2449) lists it, else USER
// and PASS (RFC 1939 7), the one login every POP3 server has. The error
// wraps ErrRefused when the server refused the credentials. On success the
// caller owns the connection.
func LoginPOP3(ctx context.Context, cfg Config, user, pass string) (*Conn, Login, error) {
	return login(ctx, "pop3", "QUIT", cfg, user, pass, (*Conn).pop3Login)
}

func (c *Conn) pop3Login(ctx context.Context, cfg Config, user, pass string) (Login, error) {
	if _, err := c.reply("greeting", false); err != nil {
		return Login{}, err
	}
	if cfg.TLS == TLSStartTLS {
		if err := c.send("STLS"); err != nil {
			return Login{}, err
		}
		if _, err := c.reply("STLS", false); err != nil {
			return Login{}, err
		}
		if err := c.upgrade(ctx, cfg.TLSConfig); err != nil {
			return Login{}, err
		}
	}
	plain, err := c.offersPlain()
	if err != nil {
		return Login{}, err
	}
	var ok string
	if plain {
		if err := c.send("AUTH PLAIN " + plainResponse(user, pass)); err != nil {
			return Login{}, err
		}
		ok, err = c.reply("AUTH", true)
		return Login{OK: ok}, err
	}
	if strings.ContainsAny(user+pass, "\r\n") {
		return Login{}, c.errorf("%w: CR or LF in the user name or password", ErrRefused)
	}
	if err := c.send("USER " + user); err != nil {
		return Login{}, err
	}
	if _, err := c.reply("USER", true); err != nil {
		return Login{}, err
	}
	if err := c.send("PASS " + pass); err != nil {
		return Login{}, err
	}
	ok, err = c.reply("PASS", true)
	return Login{OK: ok}, err
}

// offersPlain asks CAPA (RFC 2449 5) whether SASL PLAIN is offered; a
// server without CAPA offers only USER/PASS.
func (c *Conn) offersPlain() (bool, error) {
	if err := c.send("CAPA"); err != nil {
		return false, err
	}
	first, err := c.line()
	if err != nil {
		return false, err
	}
	if !strings.HasPrefix(first, "+OK") {
		return false, nil
	}
	plain := false
	for range maxLines {
		l, err := c.line()
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
	return false, c.errorf("CAPA: no end within %d lines", maxLines)
}

// reply reads one +OK/-ERR line; what names the command for errors. At
// login a -ERR is the server's refusal of the credentials unless it carries
// [SYS/TEMP] (RFC 3206 4).
func (c *Conn) reply(what string, login bool) (string, error) {
	l, err := c.line()
	if err != nil {
		return "", err
	}
	switch {
	case strings.HasPrefix(l, "+OK"):
		return l, nil
	case login && strings.HasPrefix(l, "-ERR") && !strings.Contains(l, "[SYS/TEMP]"):
		return "", c.refused(l)
	}
	return "", c.errorf("%s: %q", what, trim(l))
}
