package e2e

import (
	"slices"
	"strings"
	"testing"

	"github.com/tlsguard/tlsguard/audit"
)

// auditZone holds one domain per SPF case, under .test (RFC 2606): nothing
// here can leak to a real resolver, and the auditor only asks ours.
var auditZone = []string{
	`mx.audit.test. 300 IN A 127.0.0.1`,

	`none.audit.test. 300 IN TXT "site-verification=abc"`,
	`plusall.audit.test. 300 IN TXT "v=spf1 +all"`,
	`neutral.audit.test. 300 IN TXT "v=spf1 mx ?all"`,
	`softfail.audit.test. 300 IN TXT "v=spf1 mx ~all"`,
	`twospf.audit.test. 300 IN TXT "v=spf1 mx -all"`,
	`twospf.audit.test. 300 IN TXT "v=spf1 a -all"`,
	`badsyntax.audit.test. 300 IN TXT "v=spf1 ip4:127.0.0.300 -all"`,

	// The good domain: -all (in two TXT strings, joined per RFC 7208 3.3),
	// DMARC reject, and an MX that resolves to the audited host.
	`good.audit.test. 300 IN TXT "v=spf1 ip4:127.0.0.1 " "include:_spf.good.audit.test -all"`,
	`_spf.good.audit.test. 300 IN TXT "v=spf1 ip4:127.0.0.2 -all"`,
	`_dmarc.good.audit.test. 300 IN TXT "v=DMARC1; p=reject; rua=mailto:dmarc@good.audit.test"`,
	`good.audit.test. 300 IN MX 10 mx.audit.test.`,

	`_dmarc.plusall.audit.test. 300 IN TXT "v=DMARC1; p=none"`,
	`softfail.audit.test. 300 IN MX 10 nowhere.audit.test.`,
}

func TestAuditDNSRecords(t *testing.T) {
	d := auditStartDNS(t, auditZone...)
	run := func(t *testing.T, domain string) auditResult {
		return auditRun(t, "127.0.0.1", "--ports", "none", "--domain", domain, "--resolver", d.Addr, "--timeout", "3s")
	}
	cases := []struct {
		domain string
		grade  audit.Grade
		detail string
	}{
		{"none.audit.test", audit.Fail, "no SPF record"},
		{"nxdomain.audit.test", audit.Fail, "no SPF record"},
		{"plusall.audit.test", audit.Fail, "+all"},
		{"neutral.audit.test", audit.Warning, "?all"},
		{"softfail.audit.test", audit.Warning, "~all"},
		{"twospf.audit.test", audit.Fail, "2 SPF records"},
		{"badsyntax.audit.test", audit.Fail, "syntax error"},
		{"good.audit.test", audit.OK, "-all"},
	}
	for _, c := range cases {
		t.Run(c.domain, func(t *testing.T) {
			r := run(t, c.domain)
			r.expect(t, "spf", c.grade, c.detail)
			if c.domain == "good.audit.test" {
				r.expect(t, "dmarc", audit.OK, "p=reject")
				r.expect(t, "mx", audit.OK, "10 mx.audit.test")
				if f := r.finding(t, "mx"); strings.Contains(f.Detail, "not among") {
					t.Errorf("mx: the audited host 127.0.0.1 is mx.audit.test: %s", f.Detail)
				}
				r.expectExit(t, 0)
				return
			}
			r.expectExit(t, 1)
		})
	}

	t.Run("dmarc", func(t *testing.T) {
		run(t, "none.audit.test").expect(t, "dmarc", audit.Fail, "no DMARC record at _dmarc.none.audit.test")
		run(t, "plusall.audit.test").expect(t, "dmarc", audit.Warning, "p=none")
	})
	t.Run("mx", func(t *testing.T) {
		run(t, "none.audit.test").expect(t, "mx", audit.Warning, "no MX record")
		run(t, "softfail.audit.test").expect(t, "mx", audit.Fail, "no address for nowhere.audit.test")
	})
	t.Run("host name through the resolver", func(t *testing.T) {
		r := auditRun(t, "mx.audit.test", "--ports", "none", "--domain", "good.audit.test", "--resolver", d.Addr)
		if r.Report.Address != "127.0.0.1" {
			t.Errorf("mx.audit.test audited at %q, want 127.0.0.1 from the test DNS", r.Report.Address)
		}
		if !slices.Contains(d.Questions(), "mx.audit.test./A") {
			t.Errorf("the host name was not resolved through --resolver: %v", d.Questions())
		}
	})
	for _, q := range d.Questions() {
		if !strings.HasSuffix(q[:strings.Index(q, "/")], ".audit.test.") {
			t.Errorf("asked about a name outside the test zone: %s", q)
		}
	}
}
