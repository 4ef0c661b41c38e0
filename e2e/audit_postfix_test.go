package e2e

import (
	"strings"
	"testing"

	"github.com/tlsguard/tlsguard/audit"
)

// TestAuditWeakPostfix audits the kind of server tlsguard is put in front
// of: a Postfix with no STARTTLS, AUTH in clear (SASL through a private
// Dovecot) and relaying for 127.0.0.0/8, the network the auditor is in. One
// listener plays both port 25 and port 587.
func TestAuditWeakPostfix(t *testing.T) {
	dir := t.TempDir()
	pki := auditNewPKI(t, dir, "mail.audit.test", auditDovecotHost)
	dv := auditStartDovecot(t, pki, auditDovecotOptions{Plaintext: true})
	pf := auditStartWeakPostfix(t, dv)
	d := auditStartDNS(t, `weak.audit.test. 300 IN A 127.0.0.1`)
	port := auditPort(t, pf.Addr)

	r := auditRun(t, "weak.audit.test", "--resolver", d.Addr, "--ports", "smtp="+port+",submission="+port,
		"--domain", "example.org", "--timeout", auditServerTimeout)
	for _, svc := range []string{"smtp/" + port, "submission/" + port} {
		r.expect(t, svc+" starttls", audit.Fail, "not offered")
		r.expect(t, svc+" auth before tls", audit.Fail, "AUTH LOGIN answered 334", "advertised: AUTH PLAIN LOGIN")
		r.expect(t, svc+" open relay", audit.Fail, "external sender", "<tlsguard-audit@example.net>", "250 2.1.5")
	}
	r.expect(t, "smtp/"+port+" mail before tls", audit.Info, "accepted")
	r.expect(t, "submission/"+port+" mail before tls", audit.Warning, "accepted")
	r.expectExit(t, 1)

	// The relay probes stop at RCPT: Postfix queued nothing.
	log := pf.Log()
	for _, bad := range []string{"message-id=", "queued as", " data="} {
		if strings.Contains(log, bad) {
			t.Errorf("postfix log shows a message was started (%q):\n%s", bad, log)
		}
	}
	// No credential crossed the wire: Dovecot saw no login attempt.
	if dl := dv.Log(); strings.Contains(dl, "tlsguard-audit-invalid-user") && strings.Contains(dl, "smtp") {
		t.Errorf("dovecot saw an SMTP AUTH with the probe user:\n%s", dl)
	}

	t.Run("no relay probes", func(t *testing.T) {
		r := auditRun(t, "weak.audit.test", "--resolver", d.Addr, "--ports", "smtp="+port, "--no-relay", "--timeout", auditServerTimeout)
		for _, f := range r.Report.Findings {
			if strings.Contains(f.Check, "relay") {
				t.Errorf("--no-relay still reported %s", f.Check)
			}
		}
	})
}

// auditStartWeakPostfix starts the shared private Postfix with AUTH in
// clear through dv's SASL socket.
//
// Each main.cf line that overrides the template makes every Postfix process
// log "overriding earlier entry" at start. Those go to postlogd over a unix
// datagram socket whose queue holds 10 messages here
// (net.unix.max_dgram_qlen), and a few of them are enough for smtpd to block
// before its greeting when postlogd is slow to come up: startPostfix then
// times out. So this overrides only smtpd_sasl_auth_enable and adds the rest
// as new parameters.
func auditStartWeakPostfix(t *testing.T, dv *auditDovecot) *Postfix {
	t.Helper()
	return startPostfix(t,
		"smtpd_sasl_auth_enable = yes",
		"smtpd_sasl_type = dovecot",
		"smtpd_sasl_path = "+dv.AuthSocket,
		// The template's error: default and relay transports make smtpd
		// refuse foreign recipients at RCPT time; a real open relay accepts
		// them. A transport map (new parameter: no override) sends
		// everything to discard: instead, which still delivers nothing
		// anywhere (and the audit never sends DATA).
		"transport_maps = inline:{ { * = discard: } }",
	)
}
