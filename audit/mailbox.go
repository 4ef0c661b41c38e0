package audit

import (
	"context"
	"strings"
)

// mailboxProtocol is the protocol-specific part of an IMAP or POP3 audit;
// checkMailbox does the rest, the same for both.
type mailboxProtocol struct {
	name     string // in check names: "imap", "pop3"
	implicit Kind   // the kind that speaks TLS from the first byte
	quit     string // the line that ends a session
	greet    func(c *conn) error
	// probe reads the capabilities on a plaintext session and returns the
	// STARTTLS finding (grade, detail, advice), whether the upgrade is
	// offered, and the login-before-TLS finding.
	probe func(c *conn, svc Service) (starttls Finding, offered bool, login Finding, err error)
}

// checkMailbox audits an IMAP or POP3 port: implicit TLS, or STARTTLS
// offered and working (with the injection check), and whether a login is
// accepted before TLS.
func (a *auditor) checkMailbox(ctx context.Context, svc Service, p mailboxProtocol) []Finding {
	pre := svc.String()
	c, err := dial(ctx, a.dialAddr(svc.Port), a.cfg.Timeout)
	if err != nil {
		return closedFinding(svc, err)
	}
	defer c.Close()
	var fs []Finding
	add := func(more ...Finding) {
		for _, f := range more {
			f.Service, f.Port = svc.Name, svc.Port
			fs = append(fs, f)
		}
	}
	if svc.Kind == p.implicit {
		st, err := c.startTLS(ctx, a.clientTLSConfig())
		add(a.checkTLSEndpoint(ctx, svc, st, err)...)
		if err != nil {
			return fs
		}
		if err := p.greet(c); err != nil {
			add(Finding{Grade: Warning, Check: pre + " " + p.name, Detail: err.Error()})
		}
		c.writeLine("%s", p.quit)
		return fs
	}

	if err := p.greet(c); err != nil {
		add(Finding{Grade: Warning, Check: pre + " " + p.name, Detail: err.Error(),
			Advice: "the port is open but does not greet as an " + strings.ToUpper(p.name) + " server should"})
		return fs
	}
	starttls, offered, login, err := p.probe(c, svc)
	if err != nil {
		add(Finding{Grade: Warning, Check: pre + " " + p.name, Detail: err.Error()})
		return fs
	}
	starttls.Check = pre + " starttls"
	add(starttls, login)
	c.writeLine("%s", p.quit)

	if offered {
		tc, st, err := a.openTLS(ctx, svc, a.clientTLSConfig())
		if err == nil {
			tc.writeLine("%s", p.quit)
			tc.Close()
		}
		add(a.checkTLSEndpoint(ctx, svc, st, err)...)
		if err == nil {
			add(a.checkSTARTTLSInjection(ctx, svc))
		}
	}
	return fs
}

// loginVerdict grades a login-before-TLS probe: any note (a login the
// server would check in clear) fails; otherwise refused says how it refused.
func loginVerdict(f Finding, notes []string, refused string) Finding {
	if len(notes) > 0 {
		f.Grade = Fail
		f.Detail = strings.Join(notes, "; ")
		f.Advice = "refuse plaintext login before TLS (Dovecot: disable_plaintext_auth = yes, or auth_allow_cleartext = no from 2.4)"
		return f
	}
	f.Grade, f.Detail = OK, "refused: "+refused
	return f
}
