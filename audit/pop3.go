package audit

import (
	"fmt"
	"strings"
)

// pop3Reply reads one status line: "+OK text" or "-ERR text".
func pop3Reply(c *conn) (ok bool, text string, err error) {
	line, err := c.readLine()
	if err != nil {
		return false, "", err
	}
	switch {
	case strings.HasPrefix(line, "+OK"):
		return true, strings.TrimSpace(line[3:]), nil
	case strings.HasPrefix(line, "-ERR"):
		return false, strings.TrimSpace(line[4:]), nil
	}
	return false, line, fmt.Errorf("not a POP3 reply: %q", line)
}

// pop3Cmd sends a command and reads its status line.
func pop3Cmd(c *conn, format string, args ...any) (bool, string, error) {
	if err := c.writeLine(format, args...); err != nil {
		return false, "", err
	}
	return pop3Reply(c)
}

// pop3Greeting reads the +OK greeting.
func pop3Greeting(c *conn) error {
	ok, text, err := pop3Reply(c)
	if err != nil {
		return fmt.Errorf("POP3 greeting: %w", err)
	}
	if !ok {
		return fmt.Errorf("POP3 greeting: -ERR %s", text)
	}
	return nil
}

// pop3Caps asks for CAPA (RFC 2449 5); keys are the upper-case tags, values
// the rest of the line.
func pop3Caps(c *conn) (map[string]string, error) {
	ok, _, err := pop3Cmd(c, "CAPA")
	if err != nil {
		return nil, fmt.Errorf("CAPA: %w", err)
	}
	caps := map[string]string{}
	if !ok {
		return caps, nil // a pre-RFC 2449 server: nothing advertised
	}
	for {
		line, err := c.readLine()
		if err != nil {
			return nil, fmt.Errorf("CAPA: %w", err)
		}
		if line == "." {
			return caps, nil
		}
		k, v, _ := strings.Cut(line, " ")
		caps[strings.ToUpper(k)] = v
	}
}

// pop3StartTLS reads the greeting and sends STLS (RFC 2595 4).
func pop3StartTLS(c *conn) error {
	if err := pop3Greeting(c); err != nil {
		return err
	}
	ok, text, err := pop3Cmd(c, "STLS")
	if err != nil {
		return fmt.Errorf("STLS: %w", err)
	}
	if !ok {
		return fmt.Errorf("%w: STLS answered -ERR %s", errNoTLS, text)
	}
	return nil
}

// pop3Audit is what a POP3 audit does that an IMAP one does differently.
var pop3Audit = mailboxProtocol{
	name:     "pop3",
	implicit: POP3S,
	quit:     "QUIT",
	greet:    pop3Greeting,
	probe: func(c *conn, svc Service) (starttls Finding, offered bool, login Finding, err error) {
		caps, err := pop3Caps(c)
		if err != nil {
			return Finding{}, false, Finding{}, err
		}
		_, offered = caps["STLS"]
		if offered {
			starttls = Finding{Grade: OK, Detail: "STLS offered"}
		} else {
			starttls = Finding{Grade: Fail, Detail: "STLS not offered: passwords and mail cross the network in clear",
				Advice: "enable STLS, or better, serve POP3 over implicit TLS on 995 only (RFC 8314)"}
		}
		return starttls, offered, pop3LoginBeforeTLS(c, svc, caps), nil
	},
}

// pop3LoginBeforeTLS probes USER with an invalid user, and AUTH without a
// credential (cancelled with "*", RFC 5034 4). PASS is never sent: a +OK to
// USER already means a client's next line would be its password in clear.
// Dovecot answers a refusal with -ERR [AUTH] and a text that says why.
func pop3LoginBeforeTLS(c *conn, svc Service, caps map[string]string) Finding {
	f := Finding{Check: svc.String() + " login before tls"}
	var notes []string
	ok, text, err := pop3Cmd(c, "USER %s", probeUser)
	if err != nil {
		f.Grade, f.Detail = Warning, "USER: "+err.Error()
		return f
	}
	reply := "USER answered -ERR " + text
	if ok {
		notes = append(notes, strings.TrimSpace("USER answered +OK "+text)+": a client's next line would be its password, in clear")
	}

	sasl := strings.Fields(strings.ToUpper(caps["SASL"]))
	for _, m := range []string{"PLAIN", "LOGIN"} {
		if err := c.writeLine("AUTH %s", m); err != nil {
			break
		}
		line, err := c.readLine()
		if err != nil {
			break
		}
		if line == "+" || strings.HasPrefix(line, "+ ") {
			notes = append(notes, "AUTH "+m+" got a continuation")
			c.writeLine("*")
			c.readLine()
			break
		}
	}
	for _, m := range sasl {
		if m == "PLAIN" || m == "LOGIN" {
			notes = append(notes, "SASL "+caps["SASL"]+" advertised in clear")
			break
		}
	}
	return loginVerdict(f, notes, reply)
}
