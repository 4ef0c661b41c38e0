package e2e

import (
	"crypto/tls"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/tlsguard/tlsguard/audit"
)

// TestAuditTLSGuardIsClean audits tlsguard itself, in front of the shared
// plaintext Postfix: the proof an ops team wants after deploying it. Its
// MX listener plays port 25, its require_tls listener 587, its implicit TLS
// listener 465; the domain has -all SPF, DMARC reject and an MX pointing
// at it. Everything must pass, and the exit code must be 0.
func TestAuditTLSGuardIsClean(t *testing.T) {
	backend := startPostfix(t)
	g := startTLSGuard(t, backend)
	caFile := auditLongLivedCert(t, g)

	d := auditStartDNS(t,
		`mail.example.org. 300 IN A 127.0.0.1`,
		`example.org. 300 IN MX 10 mail.example.org.`,
		`example.org. 300 IN TXT "v=spf1 mx -all"`,
		`_dmarc.example.org. 300 IN TXT "v=DMARC1; p=reject"`,
	)
	mx, sub, subs := auditPort(t, g.MX), auditPort(t, g.Strict), auditPort(t, g.Submissions)
	r := auditRun(t, "mail.example.org", "--resolver", d.Addr, "--domain", "example.org",
		"--ports", "smtp="+mx+",submission="+sub+",smtps="+subs, "--ca-file", caFile, "--timeout", auditServerTimeout)

	for _, svc := range []string{"smtp/" + mx, "submission/" + sub} {
		r.expect(t, svc+" starttls", audit.OK, "offered")
		r.expect(t, svc+" auth before tls", audit.OK, "not advertised")
		r.expect(t, svc+" starttls injection", audit.OK, "discarded")
	}
	r.expect(t, "submission/"+sub+" mail before tls", audit.OK, "refused: 530 5.7.0")
	for _, svc := range []string{"smtp/" + mx, "submission/" + sub, "smtps/" + subs} {
		r.expect(t, svc+" tls", audit.OK, "TLS 1.3")
		r.expect(t, svc+" certificate", audit.OK, "valid for mail.example.org")
		r.expect(t, svc+" tls versions", audit.OK, "refuses TLS 1.0, TLS 1.1")
		r.expect(t, svc+" tls 1.2 ciphers", audit.OK, "only ECDHE with AEAD")
		r.expect(t, svc+" open relay", audit.OK, "refused: external sender, local sender", "550 5.7.1")
		r.expect(t, svc+" relay address tricks", audit.OK, "percent hack", "bang path", "quoted local part", "source route", "two @", "IP literal")
	}
	r.expect(t, "submission/"+sub+" auth", audit.Info, "AUTH PLAIN LOGIN")
	r.expect(t, "spf", audit.OK, "-all")
	r.expect(t, "dmarc", audit.OK, "p=reject")
	r.expect(t, "mx", audit.OK, "mail.example.org")
	for _, f := range r.Report.Findings {
		if f.Grade == audit.Warning || f.Grade == audit.Fail {
			t.Errorf("%s: %s: %s", f.Check, f.Grade, f.Detail)
		}
	}
	r.expectExit(t, 0)

	// The relay probes reached tlsguard's policy, and never a DATA.
	if log := backend.Log(); strings.Contains(log, "tlsguard-audit@example.net") {
		t.Errorf("a relay probe reached the backend:\n%s", log)
	}
}

// auditLongLivedCert gives tlsguard a 90-day certificate (the shared test
// PKI's lives a day, which the auditor rightly fails as about to expire):
// it overwrites the configured files and reloads with SIGHUP, as an admin
// renewing a certificate would. It returns the new CA's PEM file.
func auditLongLivedCert(t testing.TB, g *TLSGuard) (caFile string) {
	t.Helper()
	pki := auditNewPKI(t, t.TempDir(), "mail.example.org", "127.0.0.1")
	for src, dst := range map[string]string{pki.CertFile: g.PKI.CertFile, pki.KeyFile: g.PKI.KeyFile} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 2 * time.Second}, "tcp", g.Submissions,
			&tls.Config{ServerName: "mail.example.org", InsecureSkipVerify: true}) //nolint:gosec // comparing serials
		if err == nil {
			certs := c.ConnectionState().PeerCertificates
			c.Close()
			if len(certs) > 0 && certs[0].SerialNumber.Cmp(pki.Leaf.SerialNumber) == 0 {
				return pki.CAFile
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("tlsguard still serves its old certificate 15s after SIGHUP (last error: %v)\n%s", err, g.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
