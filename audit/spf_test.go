package audit_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/tlsguard/tlsguard/audit"
)

func TestAuditIsSPFRecord(t *testing.T) {
	for txt, want := range map[string]bool{
		"v=spf1 -all":         true,
		"v=spf1":              true,
		"V=SPF1 -all":         true,
		"v=spf10 -all":        false,
		"v=spf1-all":          false,
		"spf1 -all":           false,
		"google-site-verif=x": false,
		"":                    false,
	} {
		if got := audit.IsSPFRecord(txt); got != want {
			t.Errorf("IsSPFRecord(%q) = %v, want %v", txt, got, want)
		}
	}
}

func TestAuditParseSPFValid(t *testing.T) {
	for _, rec := range []string{
		"v=spf1 -all",
		"v=spf1",
		"v=spf1  mx  -all ",
		"v=spf1 ip4:192.0.2.0/24 ip4:198.51.100.7 ip6:2001:db8::/32 -all",
		"v=spf1 a mx a:mail.example.org/28 mx/24//64 a//64 ~all",
		"v=spf1 include:_spf.example.net include:spf.example.com. ?all",
		"v=spf1 redirect=_spf.example.org",
		"v=spf1 exists:%{i}._spf.%{d} -all",
		"v=spf1 exists:%{ir}.%{l1r+-}._spf.%{d2} -all",
		"v=spf1 ptr ptr:example.org -all",
		"v=spf1 +all",
		"v=spf1 -all exp=explain._spf.%{d}",
		"v=spf1 -all unknown-mod=anything%%here",
		"v=spf1 a:foo-bar.example-1 -all",
	} {
		if _, err := audit.ParseSPF(rec); err != nil {
			t.Errorf("ParseSPF(%q): %v", rec, err)
		}
	}
}

func TestAuditParseSPFErrors(t *testing.T) {
	for rec, want := range map[string]string{
		"v=spf1 ipv4:192.0.2.1 -all":                        "unknown mechanism",
		"v=spf1 ip4:192.0.2.300 -all":                       "not an IPv4",
		"v=spf1 ip4:2001:db8::1 -all":                       "not an IPv4",
		"v=spf1 ip6:192.0.2.1 -all":                         "not an IPv6",
		"v=spf1 ip4:192.0.2.0/33 -all":                      "CIDR",
		"v=spf1 ip4:192.0.2.0/024 -all":                     "CIDR",
		"v=spf1 ip6:2001:db8::/129 -all":                    "CIDR",
		"v=spf1 mx/33 -all":                                 "CIDR",
		"v=spf1 include -all":                               "needs a domain",
		"v=spf1 include:localhost -all":                     "no dot",
		"v=spf1 include:example.123 -all":                   "top-level",
		"v=spf1 all:example.org":                            "no argument",
		"v=spf1 exists:%{x}.example.org -all":               "macro",
		"v=spf1 a:%example.org -all":                        "bad macro",
		"v=spf1 -all redirect=a.example redirect=b.example": "twice",
		"v=spf1 include:exa mple.org -all":                  "no dot",
		"v=spf1 ~ -all":                                     "unknown mechanism",
		"v=spf1 ptr/24 -all":                                "CIDR",
		"spf1 -all":                                         "v=spf1",
	} {
		_, err := audit.ParseSPF(rec)
		if err == nil {
			t.Errorf("ParseSPF(%q) = nil error, want one containing %q", rec, want)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ParseSPF(%q) = %v, want %q in it", rec, err, want)
		}
	}
}

func TestAuditParseSPFStructure(t *testing.T) {
	r, err := audit.ParseSPF("v=spf1 mx ~include:a.example.org ip4:192.0.2.0/24 redirect=b.example.org")
	if err != nil {
		t.Fatal(err)
	}
	want := []audit.SPFDirective{
		{Qualifier: '+', Mechanism: "mx"},
		{Qualifier: '~', Mechanism: "include", Arg: "a.example.org"},
		{Qualifier: '+', Mechanism: "ip4", Arg: "192.0.2.0/24"},
	}
	if fmt.Sprint(r.Directives) != fmt.Sprint(want) {
		t.Errorf("directives = %v, want %v", r.Directives, want)
	}
	if r.Redirect != "b.example.org" {
		t.Errorf("redirect = %q", r.Redirect)
	}
	if _, ok := r.All(); ok {
		t.Error("All() found an all mechanism that is not there")
	}
}

// zone is a fake TXT lookup for CheckSPF and CheckDMARC.
type zone map[string][]string

func (z zone) lookup(_ context.Context, name string) ([]string, error) {
	if strings.HasSuffix(name, "broken.example") {
		return nil, fmt.Errorf("DNS TXT %s: server answered SERVFAIL", name)
	}
	return z[strings.TrimSuffix(name, ".")], nil
}

func TestAuditCheckSPFGrades(t *testing.T) {
	z := zone{
		"none.example":        {"google-site-verification=abc"},
		"plus.example":        {"v=spf1 +all"},
		"bare-all.example":    {"v=spf1 mx all"},
		"neutral.example":     {"v=spf1 mx ?all"},
		"soft.example":        {"v=spf1 mx ~all"},
		"hard.example":        {"v=spf1 mx -all", "other=txt"},
		"noall.example":       {"v=spf1 mx"},
		"two.example":         {"v=spf1 mx -all", "v=spf1 a -all"},
		"syntax.example":      {"v=spf1 ip4:999.0.0.1 -all"},
		"redir.example":       {"v=spf1 redirect=_spf.redir.example"},
		"_spf.redir.example":  {"v=spf1 ip4:192.0.2.1 -all"},
		"redir-soft.example":  {"v=spf1 redirect=soft.example"},
		"inc-missing.example": {"v=spf1 include:nothing.example -all"},
		"ptr.example":         {"v=spf1 ptr -all"},
		"many.example":        {"v=spf1 include:i1.example include:i2.example include:i3.example -all"},
		"i1.example":          {"v=spf1 a mx a:x.example mx:x.example -all"},
		"i2.example":          {"v=spf1 a mx a:y.example mx:y.example -all"},
		"i3.example":          {"v=spf1 a mx a:z.example -all"},
		"loop.example":        {"v=spf1 include:loop.example -all"},
	}
	for domain, want := range map[string]struct {
		grade audit.Grade
		text  string
	}{
		"none.example":        {audit.Fail, "no SPF record"},
		"missing.example":     {audit.Fail, "no SPF record"},
		"plus.example":        {audit.Fail, "+all"},
		"bare-all.example":    {audit.Fail, "+all"},
		"neutral.example":     {audit.Warning, "?all"},
		"soft.example":        {audit.Warning, "~all"},
		"hard.example":        {audit.OK, "v=spf1 mx -all"},
		"noall.example":       {audit.Warning, `no "all"`},
		"two.example":         {audit.Fail, "2 SPF records"},
		"syntax.example":      {audit.Fail, "syntax error"},
		"redir.example":       {audit.OK, "redirect=_spf.redir.example"},
		"redir-soft.example":  {audit.Warning, "~all"},
		"inc-missing.example": {audit.Fail, "nothing.example has no SPF record"},
		"ptr.example":         {audit.Warning, "ptr"},
		"many.example":        {audit.Fail, "14 DNS lookups"},
		"loop.example":        {audit.OK, "v=spf1"},
		"broken.example":      {audit.Warning, "SERVFAIL"},
	} {
		f := audit.CheckSPF(context.Background(), domain, z.lookup)
		if f.Grade != want.grade || !strings.Contains(f.Detail, want.text) {
			t.Errorf("%s: got %s %q, want %s with %q", domain, f.Grade, f.Detail, want.grade, want.text)
		}
		if f.Grade != audit.OK && f.Advice == "" {
			t.Errorf("%s: %s finding without advice", domain, f.Grade)
		}
	}
}

func TestAuditCheckDMARC(t *testing.T) {
	z := zone{
		"_dmarc.reject.example":     {"v=DMARC1; p=reject; rua=mailto:d@reject.example"},
		"_dmarc.quarantine.example": {"v=DMARC1;p=quarantine"},
		"_dmarc.none.example":       {"v=DMARC1; p=none"},
		"_dmarc.pct.example":        {"v=DMARC1; p=reject; pct=20"},
		"_dmarc.nop.example":        {"v=DMARC1; rua=mailto:x@nop.example"},
		"_dmarc.badp.example":       {"v=DMARC1; p=maybe"},
		"_dmarc.two.example":        {"v=DMARC1; p=reject", "v=DMARC1; p=none"},
		"_dmarc.other.example":      {"some other txt"},
		"_dmarc.example.co.uk":      {"v=DMARC1; p=reject; sp=none"},
	}
	for domain, want := range map[string]audit.Grade{
		"reject.example":     audit.OK,
		"quarantine.example": audit.OK,
		"none.example":       audit.Warning,
		"pct.example":        audit.Warning,
		"nop.example":        audit.Fail,
		"badp.example":       audit.Fail,
		"two.example":        audit.Fail,
		"other.example":      audit.Fail,
		"absent.example":     audit.Fail,
		"mail.example.co.uk": audit.Warning, // org domain's sp=none applies
		"example.co.uk":      audit.OK,
		"broken.example":     audit.Warning, // SERVFAIL: unknown, not absent
	} {
		f := audit.CheckDMARC(context.Background(), domain, z.lookup)
		if f.Grade != want {
			t.Errorf("%s: got %s %q, want %s", domain, f.Grade, f.Detail, want)
		}
	}
}
