package e2e

import (
	"testing"

	"github.com/tlsguard/tlsguard/audit"
)

// TestAuditDovecot audits a real Dovecot twice: hardened (no plaintext
// login, TLS 1.2+) and weak (plaintext login allowed, TLS 1.0 accepted).
// The host is a name the test DNS maps to 127.0.0.2, so the certificate is
// checked against the name as it would be for a real host.
func TestAuditDovecot(t *testing.T) {
	dir := t.TempDir()
	pki := auditNewPKI(t, dir, "mail.audit.test", auditDovecotHost)
	d := auditStartDNS(t, `mail.audit.test. 300 IN A `+auditDovecotHost)

	t.Run("hardened", func(t *testing.T) {
		dv := auditStartDovecot(t, pki, auditDovecotOptions{})
		closed, err := auditFreePort(auditDovecotHost) // nothing listens there: reported, not an error
		if err != nil {
			t.Fatal(err)
		}
		r := auditRun(t, "mail.audit.test", "--resolver", d.Addr, "--ports", dv.Ports()+",smtp="+auditItoa(closed), "--ca-file", pki.CAFile, "--timeout", auditServerTimeout)
		r.expect(t, "smtp/"+auditItoa(closed)+" port", audit.Info, "closed")
		imap, imaps, pop3, pop3s := "imap/"+auditItoa(dv.IMAP), "imaps/"+auditItoa(dv.IMAPS), "pop3/"+auditItoa(dv.POP3), "pop3s/"+auditItoa(dv.POP3S)
		r.expect(t, imap+" starttls", audit.OK, "offered")
		r.expect(t, imap+" login before tls", audit.OK, "PRIVACYREQUIRED", "LOGINDISABLED")
		r.expect(t, pop3+" starttls", audit.OK, "STLS offered")
		r.expect(t, pop3+" login before tls", audit.OK, "Plaintext authentication disallowed")
		r.expect(t, imap+" starttls injection", audit.OK)
		r.expect(t, pop3+" starttls injection", audit.OK)
		for _, svc := range []string{imap, imaps, pop3, pop3s} {
			r.expect(t, svc+" tls", audit.OK, "TLS 1.3")
			r.expect(t, svc+" certificate", audit.OK, "valid for mail.audit.test")
			r.expect(t, svc+" certificate expiry", audit.OK, "expires in 89 days")
			r.expect(t, svc+" tls versions", audit.OK, "accepts TLS 1.2, TLS 1.3", "refuses TLS 1.0, TLS 1.1", "SSLv3 not tested")
			r.expect(t, svc+" tls 1.2 ciphers", audit.OK, "only ECDHE with AEAD")
		}
		r.expectExit(t, 0)
	})

	t.Run("plaintext and old TLS", func(t *testing.T) {
		dv := auditStartDovecot(t, pki, auditDovecotOptions{Plaintext: true, OldTLS: true})
		r := auditRun(t, "mail.audit.test", "--resolver", d.Addr, "--ports", dv.Ports(), "--ca-file", pki.CAFile, "--timeout", auditServerTimeout)
		imap, imaps, pop3 := "imap/"+auditItoa(dv.IMAP), "imaps/"+auditItoa(dv.IMAPS), "pop3/"+auditItoa(dv.POP3)
		r.expect(t, imap+" starttls", audit.OK, "offered")
		r.expect(t, imap+" login before tls", audit.Fail, "LOGIN answered NO [AUTHENTICATIONFAILED]", "AUTHENTICATE PLAIN got a continuation")
		r.expect(t, pop3+" login before tls", audit.Fail, "USER answered +OK", "AUTH PLAIN got a continuation")
		r.expect(t, imaps+" tls versions", audit.Fail, "accepts TLS 1.0, TLS 1.1, TLS 1.2, TLS 1.3")
		if f := r.finding(t, imaps+" tls 1.2 ciphers"); f.Grade == audit.OK {
			t.Errorf("ssl_cipher_list = ALL:@SECLEVEL=0 passed the cipher check: %s", f.Detail)
		}
		r.expectExit(t, 1)
	})

	t.Run("wrong name and unknown CA", func(t *testing.T) {
		dv := auditStartDovecot(t, pki, auditDovecotOptions{})
		// Without --ca-file the system roots do not know the test CA; with
		// another server name the certificate does not match.
		r := auditRun(t, "mail.audit.test", "--resolver", d.Addr, "--ports", "imaps="+auditItoa(dv.IMAPS), "--servername", "other.audit.test", "--timeout", auditServerTimeout)
		r.expect(t, "imaps/"+auditItoa(dv.IMAPS)+" certificate", audit.Fail, "certificate")
		r.expectExit(t, 1)
	})
}
