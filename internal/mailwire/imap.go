package mailwire

import (
	"context"
	"fmt"
	"strings"
)

// Tags of tlsguard's IMAP commands: each login has a connection of its own,
// and each command finishes before the next, so fixed tags never collide.
const (
	tagSTARTTLS   = "a1"
	tagCapability = "a2"
	tagLogin      = "a3"
	tagLogout     = "a9"
)

// LoginIMAP connects to cfg.Address, with TLS as configured, and logs in as
// user with AUTHENTICATE PLAIN (RFC 9051 6.2.2, RFC 4616) where the server
// offers it, else LOGIN. The error wraps ErrRefused when the server refused
// the credentials. On success the caller owns the connection.
func LoginIMAP(ctx context.Context, cfg Config, user, pass string) (*Conn, Login, error) {
	return login(ctx, "imap", tagLogout+" LOGOUT", cfg, user, pass, (*Conn).imapLogin)
}

func (c *Conn) imapLogin(ctx context.Context, cfg Config, user, pass string) (Login, error) {
	greeting, err := c.line()
	if err != nil {
		return Login{}, err
	}
	if !strings.HasPrefix(greeting, "* OK") {
		return Login{}, c.errorf("greeting %q", trim(greeting))
	}
	caps := greetingCapabilities(greeting)
	if cfg.TLS == TLSStartTLS {
		if _, err := c.command(tagSTARTTLS, "STARTTLS", false); err != nil {
			return Login{}, err
		}
		if err := c.upgrade(ctx, cfg.TLSConfig); err != nil {
			return Login{}, err
		}
		caps = nil // RFC 9051 6.2.1: what the server said before TLS is void
	}
	if caps == nil {
		if caps, err = c.capabilities(); err != nil {
			return Login{}, err
		}
	}
	switch {
	case caps["AUTH=PLAIN"]:
		return c.authenticatePlain(user, pass, caps["SASL-IR"])
	case caps["LOGINDISABLED"]:
		return Login{}, c.errorf("the server offers neither AUTH=PLAIN nor LOGIN (LOGINDISABLED)")
	}
	return c.loginCommand(user, pass, caps["LITERAL+"])
}

// greetingCapabilities reads the CAPABILITY response code a greeting may
// carry (RFC 9051 7.1), which spares the CAPABILITY command; nil without
// one.
func greetingCapabilities(greeting string) map[string]bool {
	_, rest, ok := strings.Cut(strings.ToUpper(greeting), "[CAPABILITY ")
	if !ok {
		return nil
	}
	list, _, ok := strings.Cut(rest, "]")
	if !ok {
		return nil
	}
	return capabilityWords(list, map[string]bool{})
}

// capabilities asks CAPABILITY (RFC 9051 6.1.1).
func (c *Conn) capabilities() (map[string]bool, error) {
	l, err := c.command(tagCapability, "CAPABILITY", false)
	if err != nil {
		return nil, err
	}
	caps := map[string]bool{}
	for _, u := range l.Untagged {
		if rest, ok := strings.CutPrefix(strings.ToUpper(u), "* CAPABILITY "); ok {
			capabilityWords(rest, caps)
		}
	}
	return caps, nil
}

// capabilityWords adds the words of list to caps, upper case.
func capabilityWords(list string, caps map[string]bool) map[string]bool {
	for _, w := range strings.Fields(list) {
		caps[strings.ToUpper(w)] = true
	}
	return caps
}

// authenticatePlain runs AUTHENTICATE PLAIN, with the response on the
// command line where the server offers SASL-IR (RFC 4959).
func (c *Conn) authenticatePlain(user, pass string, ir bool) (Login, error) {
	if ir {
		return c.command(tagLogin, "AUTHENTICATE PLAIN "+plainResponse(user, pass), true)
	}
	if err := c.send(tagLogin + " AUTHENTICATE PLAIN"); err != nil {
		return Login{}, err
	}
	l, err := c.line()
	if err != nil {
		return Login{}, err
	}
	if !strings.HasPrefix(l, "+") {
		// Before the credentials, a NO is no verdict on them.
		return Login{}, c.errorf("AUTHENTICATE PLAIN: %q", trim(l))
	}
	if err := c.send(plainResponse(user, pass)); err != nil {
		return Login{}, err
	}
	return c.response(tagLogin, "AUTHENTICATE", true)
}

// loginCommand runs LOGIN with both arguments as literals (RFC 9051 4.3),
// which carry any character a quoted string cannot: non-synchronising
// (RFC 7888) where the server offers LITERAL+, else each after the
// server's "+".
func (c *Conn) loginCommand(user, pass string, nonSync bool) (Login, error) {
	if nonSync {
		return c.command(tagLogin, fmt.Sprintf("LOGIN {%d+}\r\n%s {%d+}\r\n%s", len(user), user, len(pass), pass), true)
	}
	lit := func(prefix, v, suffix string) error {
		if err := c.send(fmt.Sprintf("%s{%d}", prefix, len(v))); err != nil {
			return err
		}
		l, err := c.line()
		if err != nil {
			return err
		}
		if !strings.HasPrefix(l, "+") {
			if rest, ok := strings.CutPrefix(l, tagLogin+" "); ok {
				if _, err := c.status(rest, "LOGIN", true); err != nil {
					return err
				}
			}
			return c.errorf("LOGIN: %q", trim(l))
		}
		return c.write(v + suffix)
	}
	if err := lit(tagLogin+" LOGIN ", user, ""); err != nil {
		return Login{}, err
	}
	if err := lit(" ", pass, "\r\n"); err != nil {
		return Login{}, err
	}
	return c.response(tagLogin, "LOGIN", true)
}

// command sends "tag cmd" and reads its response.
func (c *Conn) command(tag, cmd string, login bool) (Login, error) {
	if err := c.send(tag + " " + cmd); err != nil {
		return Login{}, err
	}
	name, _, _ := strings.Cut(cmd, " ") // never the arguments: they may be credentials
	return c.response(tag, name, login)
}

// response reads up to the tagged response for tag, keeping the untagged
// ones; what names the command for errors.
func (c *Conn) response(tag, what string, login bool) (Login, error) {
	var l Login
	for range maxLines {
		line, err := c.line()
		if err != nil {
			return Login{}, err
		}
		rest, ok := strings.CutPrefix(line, tag+" ")
		if !ok {
			if strings.HasPrefix(line, "* ") {
				l.Untagged = append(l.Untagged, line)
			}
			continue
		}
		l.OK, err = c.status(rest, what, login)
		if err != nil {
			return Login{}, err
		}
		return l, nil
	}
	return Login{}, c.errorf("%s: no tagged response within %d lines", what, maxLines)
}

// status judges a tagged response, rest being what follows the tag: OK is
// success. At login a NO is the server's refusal of the credentials unless
// its response code says it cannot check them now ([UNAVAILABLE],
// [SERVERBUG], RFC 5530 3); anything else is an error.
func (c *Conn) status(rest, what string, login bool) (string, error) {
	word, _, _ := strings.Cut(rest, " ")
	switch strings.ToUpper(word) {
	case "OK":
		return rest, nil
	case "NO":
		if login && !strings.Contains(rest, "[UNAVAILABLE]") && !strings.Contains(rest, "[SERVERBUG]") {
			return "", c.refused(rest)
		}
	}
	return "", c.errorf("%s: %q", what, trim(rest))
}
