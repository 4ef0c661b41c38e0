package policy_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/tlsguard/tlsguard/policy"
)

func mustParse(t testing.TB, src string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("test.yaml", []byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

func mustAddr(t testing.TB, s string, utf8 bool) policy.Address {
	t.Helper()
	a, err := policy.ParseAddress(s, utf8)
	if err != nil {
		t.Fatalf("ParseAddress(%q): %v", s, err)
	}
	return a
}

func TestIsLocal(t *testing.T) {
	const exact = "local_domains: [example.org]\n"
	const wild = "local_domains: [example.org, \"*.example.org\"]\n"
	const onlyWild = "local_domains: [\"*.example.org\"]\n"
	const uLabel = "local_domains: [bücher.example]\n"
	const aLabel = "local_domains: [XN--BCHER-KVA.example]\n"
	cases := []struct {
		policy, addr string
		utf8, local  bool
	}{
		{exact, "user@example.org", false, true},
		{exact, "user@EXAMPLE.ORG", false, true},
		{exact, "User@Example.Org", false, true},
		{exact, "user@other.test", false, false},
		{exact, "user@example.org.other.test", false, false},
		{exact, "user@notexample.org", false, false},
		// relay-trick battery
		{exact, "user%foreign.test@example.org", false, false},
		{exact, "foreign.test!user@example.org", false, false},
		{exact, "victim@foreign.test@example.org", false, false},
		{exact, "@foreign.test:user@example.org", false, false},
		{exact, "a b@example.org", false, false},
		{exact, "user@[127.0.0.1]", false, false},
		{exact, "user@[IPv6:::1]", false, false},
		{exact, "user\uff05foreign.test@example.org", true, false},
		{exact, "user\uff20foreign.test@example.org", true, false},
		{exact, "j\u00f6rg@example.org", true, true},
		{exact, "", false, false},
		// wildcards
		{exact, "user@sub.example.org", false, false},
		{wild, "user@sub.example.org", false, true},
		{wild, "user@a.b.sub.example.org", false, true},
		{wild, "user@example.org", false, true},
		{onlyWild, "user@example.org", false, false},
		{onlyWild, "user@SUB.example.org", false, true},
		{onlyWild, "user@subexample.org", false, false},
		// IDN: either form in the policy matches either form in the address
		{uLabel, "user@bücher.example", true, true},
		{uLabel, "user@xn--bcher-kva.example", false, true},
		{aLabel, "user@bücher.example", true, true},
		{aLabel, "user@Xn--Bcher-Kva.Example", false, true},
		{aLabel, "user@bucher.example", false, false},
	}
	for _, tc := range cases {
		p := mustParse(t, tc.policy)
		a := mustAddr(t, tc.addr, tc.utf8)
		if got := p.IsLocal(a); got != tc.local {
			t.Errorf("%s with %q: IsLocal(%q) = %v, want %v", strings.TrimSpace(tc.policy), tc.addr, a, got, tc.local)
		}
	}
}

func TestCheckRecipient(t *testing.T) {
	p := mustParse(t, "local_domains: [example.org, \"*.example.org\"]\ntrusted_networks: [127.0.0.0/8, \"::1/128\", 192.0.2.0/24]\n")
	ip := netip.MustParseAddr
	anon := policy.Session{Listener: "submission", TLS: true, ClientIP: ip("203.0.113.5")}
	authed := anon
	authed.User = "alice"
	trusted := anon
	trusted.ClientIP = ip("192.0.2.77")
	cases := []struct {
		name   string
		s      policy.Session
		rcpt   string
		action policy.Action
		rule   string
	}{
		{"local from anyone", anon, "user@example.org", policy.Accept, policy.RuleLocalDomains},
		{"local subdomain", anon, "user@mx.example.org", policy.Accept, policy.RuleLocalDomains},
		{"local wins over auth", authed, "user@example.org", policy.Accept, policy.RuleLocalDomains},
		{"relay anonymous", anon, "user@foreign.test", policy.Reject, policy.RuleDefault},
		{"relay authenticated", authed, "user@foreign.test", policy.Accept, policy.RuleAuthenticated},
		{"relay trusted", trusted, "user@foreign.test", policy.Accept, policy.RuleTrustedNetworks},
		{"relay loopback v6", policy.Session{ClientIP: ip("::1")}, "user@foreign.test", policy.Accept, policy.RuleTrustedNetworks},
		{"relay IPv4-mapped trusted", policy.Session{ClientIP: ip("::ffff:127.0.0.1")}, "user@foreign.test", policy.Accept, policy.RuleTrustedNetworks},
		{"relay IPv4-mapped untrusted", policy.Session{ClientIP: ip("::ffff:203.0.113.5")}, "user@foreign.test", policy.Reject, policy.RuleDefault},
		{"relay zoned v6", policy.Session{ClientIP: ip("::1%lo")}, "user@foreign.test", policy.Accept, policy.RuleTrustedNetworks},
		{"no client IP", policy.Session{}, "user@foreign.test", policy.Reject, policy.RuleDefault},
		{"percent hack anonymous", anon, "user%foreign.test@example.org", policy.Reject, policy.RuleDefault},
		{"bang path anonymous", anon, "foreign.test!user@example.org", policy.Reject, policy.RuleDefault},
		{"quoted @ anonymous", anon, "victim@foreign.test@example.org", policy.Reject, policy.RuleDefault},
		{"literal anonymous", anon, "user@[127.0.0.1]", policy.Reject, policy.RuleDefault},
		{"percent hack authenticated", authed, "user%foreign.test@example.org", policy.Accept, policy.RuleAuthenticated},
	}
	from := mustAddr(t, "sender@foreign.test", false)
	for _, tc := range cases {
		d := p.CheckRecipient(tc.s, from, mustAddr(t, tc.rcpt, false))
		if d.Action != tc.action || d.Rule != tc.rule {
			t.Errorf("%s: got %v by %q, want %v by %q", tc.name, d.Action, d.Rule, tc.action, tc.rule)
		}
		if d.Action == policy.Reject {
			if got, want := d.Reply.String(), "550 5.7.1 Relaying denied. Authentication required."; got != want {
				t.Errorf("%s: reply %q, want %q", tc.name, got, want)
			}
		}
		if d.Action == policy.Accept && d.Reply.Code != 250 {
			t.Errorf("%s: accept with reply %v", tc.name, d.Reply)
		}
	}
}

func TestZeroDecisionIsNotAccept(t *testing.T) {
	var d policy.Decision
	if d.Action == policy.Accept || d.Action == policy.Reject || d.Action == policy.TempFail {
		t.Fatalf("zero Action is %v", d.Action)
	}
	for a, want := range map[policy.Action]string{policy.Accept: "accept", policy.Reject: "reject", policy.TempFail: "tempfail"} {
		if a.String() != want {
			t.Errorf("%d: %q", a, a.String())
		}
	}
}

// BenchmarkCheckRecipient measures one decision against a policy of 10,000
// local domains (half exact, half wildcards), for a mix of local, wildcard
// and foreign recipients.
func BenchmarkCheckRecipient(b *testing.B) {
	var src strings.Builder
	src.WriteString("local_domains:\n")
	for i := range 5000 {
		fmt.Fprintf(&src, "  - d%d.example\n  - \"*.w%d.example\"\n", i, i)
	}
	src.WriteString("trusted_networks: [10.0.0.0/8]\n")
	p := mustParse(b, src.String())
	rcpts := []policy.Address{
		mustAddr(b, "user@d4999.example", false),
		mustAddr(b, "user@a.b.c.w2500.example", false),
		mustAddr(b, "user@x.y.z.foreign.test", false),
		mustAddr(b, "user%foreign.test@d1.example", false),
	}
	s := policy.Session{ClientIP: netip.MustParseAddr("203.0.113.9")}
	from := mustAddr(b, "sender@foreign.test", false)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p.CheckRecipient(s, from, rcpts[i%len(rcpts)])
	}
}
