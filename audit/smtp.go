package audit

import (
	"context"
	"fmt"
	"strings"
)

// checkService dispatches to the protocol's checks; a port that does not
// answer gives a single closed finding.
func (a *auditor) checkService(ctx context.Context, svc Service) []Finding {
	switch svc.Kind {
	case SMTP, SMTPS:
		return a.checkSMTP(ctx, svc)
	case IMAP, IMAPS:
		return a.checkMailbox(ctx, svc, imapAudit)
	default:
		return a.checkMailbox(ctx, svc, pop3Audit)
	}
}

// closedFinding reports a port that refused the connection or gave no
// answer: a fact, not an error, since few hosts run every mail service.
func closedFinding(svc Service, err error) []Finding {
	return []Finding{{Grade: Info, Check: svc.String() + " port", Service: svc.Name, Port: svc.Port, Detail: describeDialError(err), closed: true}}
}

// ehloName is what the auditor says in EHLO on c.
func (a *auditor) ehloName(c *conn) string {
	if a.cfg.EHLOName != "" {
		return a.cfg.EHLOName
	}
	return c.localLiteral()
}

// smtpCaps are the EHLO keywords (upper case) and their parameters.
type smtpCaps map[string]string

func (c smtpCaps) has(k string) bool { _, ok := c[k]; return ok }

// smtpGreeting reads the 220 greeting (RFC 5321 4.2).
func smtpGreeting(c *conn) error {
	code, msg, err := c.smtpReply()
	if err != nil {
		return fmt.Errorf("SMTP greeting: %w", err)
	}
	if code != 220 {
		return fmt.Errorf("SMTP greeting: %d %s", code, oneLine(msg))
	}
	return nil
}

// smtpHello sends EHLO, falling back to HELO for an old server, and returns
// the extensions advertised.
func smtpHello(c *conn, name string) (smtpCaps, error) {
	code, msg, err := c.smtpCmd("EHLO %s", name)
	if err != nil {
		return nil, fmt.Errorf("EHLO: %w", err)
	}
	if code == 250 {
		caps := smtpCaps{}
		lines := strings.Split(msg, "\n")
		for _, l := range lines[1:] {
			k, v, _ := strings.Cut(strings.TrimSpace(l), " ")
			caps[strings.ToUpper(k)] = v
		}
		return caps, nil
	}
	code, msg, err = c.smtpCmd("HELO %s", name)
	if err != nil {
		return nil, fmt.Errorf("HELO: %w", err)
	}
	if code != 250 {
		return nil, fmt.Errorf("EHLO and HELO refused: %d %s", code, oneLine(msg))
	}
	return smtpCaps{}, nil
}

// smtpStartTLS takes a fresh connection to the point where the TLS
// handshake starts: greeting, EHLO, STARTTLS, 220 (RFC 3207 4).
func smtpStartTLS(c *conn, ehlo string) error {
	if err := smtpGreeting(c); err != nil {
		return err
	}
	caps, err := smtpHello(c, ehlo)
	if err != nil {
		return err
	}
	if !caps.has("STARTTLS") {
		return errNoTLS
	}
	code, msg, err := c.smtpCmd("STARTTLS")
	if err != nil {
		return fmt.Errorf("STARTTLS: %w", err)
	}
	if code != 220 {
		return fmt.Errorf("STARTTLS: %d %s", code, oneLine(msg))
	}
	return nil
}

// checkSMTP audits an SMTP port: STARTTLS (or implicit TLS on 465), AUTH
// before TLS, MAIL before TLS on the submission port, the TLS endpoint, and
// open relaying.
func (a *auditor) checkSMTP(ctx context.Context, svc Service) (fs []Finding) {
	pre := svc.String()
	c, err := dial(ctx, a.dialAddr(svc.Port), a.cfg.Timeout)
	if err != nil {
		return closedFinding(svc, err)
	}
	defer c.Close()
	add := func(f Finding) {
		f.Service, f.Port = svc.Name, svc.Port
		fs = append(fs, f)
	}
	addAll := func(more []Finding) {
		for _, f := range more {
			add(f)
		}
	}

	if svc.Kind == SMTPS {
		st, err := c.startTLS(ctx, a.clientTLSConfig())
		addAll(a.checkTLSEndpoint(ctx, svc, st, err))
		if err != nil {
			return fs
		}
	}
	if err := smtpGreeting(c); err != nil {
		add(Finding{Grade: Warning, Check: pre + " smtp", Detail: err.Error(),
			Advice: "the port is open but does not greet as an SMTP server should"})
		return fs
	}
	relayDone := a.cfg.SkipRelay
	defer func() {
		if !relayDone {
			add(Finding{Grade: Warning, Check: pre + " open relay",
				Detail: "not tested: no session got as far as MAIL (see the findings above)",
				Advice: "fix what stops the session, then audit again"})
		}
	}()
	caps, err := smtpHello(c, a.ehloName(c))
	if err != nil {
		add(Finding{Grade: Warning, Check: pre + " smtp", Detail: err.Error()})
		return fs
	}

	// runRelay probes relaying once per port, on the first session that
	// gets to MAIL; open makes a like session if the server hangs up.
	runRelay := func(open func() (*conn, error), first *conn) {
		if relayDone {
			return
		}
		relayDone = true
		addAll(a.checkRelay(ctx, svc, first, open))
	}

	if svc.Kind == SMTP {
		if caps.has("STARTTLS") {
			add(Finding{Grade: OK, Check: pre + " starttls", Detail: "offered"})
		} else {
			add(Finding{Grade: Fail, Check: pre + " starttls", Detail: "not offered: mail and any password cross the network in clear",
				Advice: "enable STARTTLS (RFC 3207), or put tlsguard in front of the server"})
		}
		add(smtpAuthBeforeTLS(c, svc, caps))
		mailOK, mf := smtpPlainMail(c, svc, a.cfg.MailFrom)
		add(mf)
		if mailOK {
			runRelay(func() (*conn, error) { return a.smtpSession(ctx, svc, false) }, c)
		}
		c.writeLine("QUIT")
		c.Close()
		if !caps.has("STARTTLS") {
			return fs
		}
		tc, st, err := a.openTLS(ctx, svc, a.clientTLSConfig())
		addAll(a.checkTLSEndpoint(ctx, svc, st, err))
		if err != nil {
			return fs
		}
		defer tc.Close()
		add(a.checkSTARTTLSInjection(ctx, svc))
		c = tc
		if caps, err = smtpHello(c, a.ehloName(c)); err != nil {
			add(Finding{Grade: Warning, Check: pre + " smtp", Detail: "after STARTTLS: " + err.Error()})
			return fs
		}
	}

	if mechs := caps["AUTH"]; mechs != "" {
		add(Finding{Grade: Info, Check: pre + " auth", Detail: "AUTH " + mechs + " offered over TLS"})
	} else {
		add(Finding{Grade: Info, Check: pre + " auth", Detail: "no AUTH offered over TLS"})
	}
	runRelay(func() (*conn, error) { return a.smtpSession(ctx, svc, true) }, c)
	c.writeLine("QUIT")
	return fs
}

// smtpSession opens a new session on svc up to and including EHLO, over TLS
// when tlsOn is true.
func (a *auditor) smtpSession(ctx context.Context, svc Service, tlsOn bool) (*conn, error) {
	var c *conn
	var err error
	if tlsOn {
		c, _, err = a.openTLS(ctx, svc, a.clientTLSConfig())
		if err == nil && svc.Kind == SMTPS {
			err = smtpGreeting(c)
		}
	} else {
		c, err = dial(ctx, a.dialAddr(svc.Port), a.cfg.Timeout)
		if err == nil {
			err = smtpGreeting(c)
		}
	}
	if err != nil {
		if c != nil {
			c.Close()
		}
		return nil, err
	}
	if _, err := smtpHello(c, a.ehloName(c)); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// smtpAuthBeforeTLS checks whether a password could be sent before TLS. It
// never sends one: each AUTH is given without an initial response, and a
// 334 challenge (the server is ready to read a credential) is cancelled with
// "*" (RFC 4954 4). Advertising AUTH before TLS fails on its own, because a
// client using an initial response (SASL-IR) sends the password with the
// AUTH command itself, before any refusal.
func smtpAuthBeforeTLS(c *conn, svc Service, caps smtpCaps) Finding {
	f := Finding{Check: svc.String() + " auth before tls"}
	advertised := caps["AUTH"]
	mechs := []string{"LOGIN", "PLAIN"}
	var replies []string
	for _, m := range mechs {
		code, msg, err := c.smtpCmd("AUTH %s", m)
		if err != nil {
			replies = append(replies, "AUTH "+m+": "+err.Error())
			break
		}
		if code == 334 {
			c.smtpCmd("*")
			f.Grade = Fail
			f.Detail = fmt.Sprintf("AUTH %s answered %d before TLS: the server reads a password sent in clear", m, code)
			if advertised != "" {
				f.Detail += " (advertised: AUTH " + advertised + ")"
			}
			f.Advice = "offer AUTH only after STARTTLS (Postfix: smtpd_tls_auth_only = yes); tlsguard never offers it in clear"
			return f
		}
		replies = append(replies, fmt.Sprintf("AUTH %s: %d %s", m, code, oneLine(msg)))
	}
	if advertised != "" {
		f.Grade = Fail
		f.Detail = "AUTH " + advertised + " advertised before TLS (a client using SASL-IR sends its password with the command); " + strings.Join(replies, "; ")
		f.Advice = "advertise AUTH only after STARTTLS (Postfix: smtpd_tls_auth_only = yes)"
		return f
	}
	f.Grade = OK
	f.Detail = "not advertised; refused: " + strings.Join(replies, "; ")
	return f
}

// smtpPlainMail tries MAIL before TLS. On the submission port accepting it
// is a warning (a client can submit mail, and so its content, in clear); on
// port 25 it is how MTAs talk and only reported.
func smtpPlainMail(c *conn, svc Service, from string) (bool, Finding) {
	f := Finding{Check: svc.String() + " mail before tls"}
	code, msg, err := c.smtpCmd("MAIL FROM:<%s>", from)
	if err != nil {
		f.Grade, f.Detail = Warning, err.Error()
		return false, f
	}
	reply := fmt.Sprintf("%d %s", code, oneLine(msg))
	if code/100 != 2 {
		f.Grade, f.Detail = OK, "refused: "+reply
		return false, f
	}
	c.smtpCmd("RSET")
	f.Detail = "accepted: " + reply
	if svc.client() {
		f.Grade = Warning
		f.Advice = "require TLS before MAIL on the submission port (Postfix: -o smtpd_tls_security_level=encrypt; tlsguard: require_tls)"
	} else {
		f.Grade = Info
		f.Detail += " (normal on port 25)"
	}
	return true, f
}
