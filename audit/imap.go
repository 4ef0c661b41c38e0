package audit

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// Credentials for LOGIN and USER/PASS probes: obviously invalid, so that a
// server that checks them learns nothing and a log reader sees an audit.
const (
	probeUser     = "tlsguard-audit-invalid-user"
	probePassword = "not-a-password"
)

// refusalText matches the usual wording of "not before TLS" refusals
// (Dovecot, Courier, Cyrus), for servers that give no response code.
var refusalText = regexp.MustCompile(`(?i)plaintext|cleartext|clear text|ssl|tls|secure|encrypt|privacy`)

// imapTagged reads lines until the tagged response for tag and returns the
// untagged lines and the tagged line's status and text.
func imapTagged(c *conn, tag string) (untagged []string, status, text string, err error) {
	for {
		line, err := c.readLine()
		if err != nil {
			return untagged, "", "", err
		}
		if rest, ok := strings.CutPrefix(line, tag+" "); ok {
			status, text, _ = strings.Cut(rest, " ")
			return untagged, strings.ToUpper(status), text, nil
		}
		untagged = append(untagged, line)
	}
}

// imapGreeting reads "* OK" (or PREAUTH) and returns the line.
func imapGreeting(c *conn) (string, error) {
	line, err := c.readLine()
	if err != nil {
		return "", fmt.Errorf("IMAP greeting: %w", err)
	}
	u := strings.ToUpper(line)
	if !strings.HasPrefix(u, "* OK") && !strings.HasPrefix(u, "* PREAUTH") {
		return line, fmt.Errorf("IMAP greeting: %s", line)
	}
	return line, nil
}

// imapCaps asks for CAPABILITY (RFC 3501 6.1.1); keys are upper case.
func imapCaps(c *conn) (map[string]bool, error) {
	if err := c.writeLine("a1 CAPABILITY"); err != nil {
		return nil, err
	}
	untagged, status, text, err := imapTagged(c, "a1")
	if err != nil {
		return nil, fmt.Errorf("CAPABILITY: %w", err)
	}
	if status != "OK" {
		return nil, fmt.Errorf("CAPABILITY: %s %s", status, text)
	}
	caps := map[string]bool{}
	for _, l := range untagged {
		if rest, ok := strings.CutPrefix(strings.ToUpper(l), "* CAPABILITY "); ok {
			for _, w := range strings.Fields(rest) {
				caps[w] = true
			}
		}
	}
	return caps, nil
}

// imapStartTLS reads the greeting and sends STARTTLS (RFC 3501 6.2.1).
func imapStartTLS(c *conn) error {
	if _, err := imapGreeting(c); err != nil {
		return err
	}
	if err := c.writeLine("a0 STARTTLS"); err != nil {
		return err
	}
	_, status, text, err := imapTagged(c, "a0")
	if err != nil {
		return fmt.Errorf("STARTTLS: %w", err)
	}
	if status != "OK" {
		return fmt.Errorf("%w: STARTTLS answered %s %s", errNoTLS, status, text)
	}
	return nil
}

// imapAudit is what an IMAP audit does that a POP3 one does differently.
var imapAudit = mailboxProtocol{
	name:     "imap",
	implicit: IMAPS,
	quit:     "a9 LOGOUT",
	greet:    func(c *conn) error { _, err := imapGreeting(c); return err },
	probe: func(c *conn, svc Service) (starttls Finding, offered bool, login Finding, err error) {
		caps, err := imapCaps(c)
		if err != nil {
			return Finding{}, false, Finding{}, err
		}
		if caps["STARTTLS"] {
			starttls = Finding{Grade: OK, Detail: "offered"}
		} else {
			starttls = Finding{Grade: Fail, Detail: "not offered: passwords and mail cross the network in clear",
				Advice: "enable STARTTLS, or better, serve IMAP over implicit TLS on 993 only (RFC 8314)"}
		}
		return starttls, caps["STARTTLS"], imapLoginBeforeTLS(c, svc, caps), nil
	},
}

// imapLoginBeforeTLS probes LOGIN with an invalid user and AUTHENTICATE
// without a credential (cancelled with "*" at the first "+", RFC 3501
// 6.2.2). A server that answers LOGIN with an authentication failure, or
// AUTHENTICATE with a continuation, would read a real password in clear.
func imapLoginBeforeTLS(c *conn, svc Service, caps map[string]bool) Finding {
	f := Finding{Check: svc.String() + " login before tls"}
	var mechs []string
	for k := range caps {
		if m, ok := strings.CutPrefix(k, "AUTH="); ok && (m == "PLAIN" || m == "LOGIN") {
			mechs = append(mechs, m)
		}
	}
	sort.Strings(mechs)
	var notes []string
	if err := c.writeLine(`a2 LOGIN "%s" "%s"`, probeUser, probePassword); err != nil {
		f.Grade, f.Detail = Warning, err.Error()
		return f
	}
	_, status, text, err := imapTagged(c, "a2")
	if err != nil {
		f.Grade, f.Detail = Warning, "LOGIN: "+err.Error()
		if isTimeout(err) {
			f.Detail = fmt.Sprintf("LOGIN with an invalid user got no answer within %s: the server seems to be checking the password (a refusal before TLS is immediate)", c.timeout)
			f.Advice = "rerun with a longer --timeout: servers delay failed logins, more so after repeated failures"
		}
		return f
	}
	loginReply := status + " " + text
	loginAccepted := false
	switch {
	case status == "OK":
		loginAccepted = true
	case status == "BAD":
	case strings.Contains(strings.ToUpper(text), "[PRIVACYREQUIRED]"):
	case strings.Contains(strings.ToUpper(text), "[AUTHENTICATIONFAILED]"):
		loginAccepted = true
	case caps["LOGINDISABLED"] || refusalText.MatchString(text):
	default:
		loginAccepted = true
	}
	if loginAccepted {
		notes = append(notes, "LOGIN answered "+loginReply+": the server checks passwords sent in clear")
	}

	authAccepted := ""
	for _, m := range []string{"PLAIN", "LOGIN"} {
		if err := c.writeLine("a3 AUTHENTICATE %s", m); err != nil {
			break
		}
		line, err := c.readLine()
		if err != nil {
			break
		}
		if strings.HasPrefix(line, "+") {
			authAccepted = m
			c.writeLine("*")
			imapTagged(c, "a3")
			break
		}
		if !strings.HasPrefix(line, "a3 ") {
			imapTagged(c, "a3")
		}
	}
	if authAccepted != "" {
		notes = append(notes, "AUTHENTICATE "+authAccepted+" got a continuation")
	}
	if len(mechs) > 0 && !caps["LOGINDISABLED"] {
		notes = append(notes, "AUTH="+strings.Join(mechs, " AUTH=")+" advertised in clear")
	}
	refused := "LOGIN answered " + loginReply
	if caps["LOGINDISABLED"] {
		refused += " (LOGINDISABLED advertised)"
	}
	return loginVerdict(f, notes, refused)
}
