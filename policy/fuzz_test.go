package policy_test

import (
	"errors"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/tlsguard/tlsguard/internal/yamlx"
	"github.com/tlsguard/tlsguard/policy"
)

// fuzzPolicy makes every plausible target domain local, so that the
// invariant "an ambiguous address is never local" is exercised.
const fuzzPolicy = `local_domains: [example.org, "*.example.org", localhost, bücher.example, "*.foreign.test"]`

// FuzzParseAddress checks, for any input go-smtp could hand over:
//   - ParseAddress does not panic, and fails only with an *AddressError
//     carrying a 553 reply;
//   - String() has no CR, LF, NUL, other control byte, or space outside
//     the quoted local part, fits the length limits, and go-smtp's parser
//     unquotes it back to Local@Domain;
//   - parsing that unquoted form again gives the same Address (stable);
//   - an ambiguous local part or an address literal is never IsLocal.
func FuzzParseAddress(f *testing.F) {
	for _, s := range []string{
		"user@example.org",
		"user%foreign.test@example.org",
		"foreign.test!user@example.org",
		"victim@foreign.test@example.org",
		"user@EXAMPLE.ORG",
		"user@example.org.",
		"user@[127.0.0.1]",
		"user@[IPv6:::1]",
		"user@sub.example.org",
		"user@bücher.example",
		"user@xn--bcher-kva.example",
		`a"b\c@example.org`,
		"a b@example.org",
		"",
	} {
		f.Add(s, false)
		f.Add(s, true)
	}
	p, err := policy.Parse("fuzz.yaml", []byte(fuzzPolicy))
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in string, smtputf8 bool) {
		a, err := policy.ParseAddress(in, smtputf8)
		if err != nil {
			var ae *policy.AddressError
			if !errors.As(err, &ae) || ae.Reply.Code != 553 || ae.Reason == "" {
				t.Fatalf("%q: error %#v is not a 553 *AddressError", in, err)
			}
			return
		}
		if a.IsNull() {
			if in != "" {
				t.Fatalf("%q parsed as the null address", in)
			}
			return
		}
		s := a.String()
		if len(s) > policy.MaxAddressLen {
			t.Fatalf("%q: String() %q is %d octets", in, s, len(s))
		}
		checkWireSafe(t, s)

		unquoted, ok := goSMTPUnquote(s)
		if !ok || unquoted != a.Local+"@"+a.Domain {
			t.Fatalf("%q: go-smtp would read String() %q as %q (ok=%v), want %q", in, s, unquoted, ok, a.Local+"@"+a.Domain)
		}
		b, err := policy.ParseAddress(unquoted, smtputf8)
		if err != nil || b != a {
			t.Fatalf("%q: reparsing %q gave %+v, %v; want %+v", in, unquoted, b, err, a)
		}
		if b.String() != s {
			t.Fatalf("%q: String() not stable: %q then %q", in, s, b.String())
		}

		if a.Domain != strings.ToLower(a.Domain) && !a.IsLiteral() {
			t.Fatalf("%q: domain %q not lower-case", in, a.Domain)
		}
		if p.IsLocal(a) && (a.Ambiguous() || a.IsLiteral()) {
			t.Fatalf("%q: ambiguous or literal address %q is local", in, s)
		}
		if p.IsLocal(a) && strings.ContainsAny(a.Local, `@%!"\ `) {
			t.Fatalf("%q: local part %q with routing characters is local", in, a.Local)
		}
	})
}

// checkWireSafe fails if s has a control byte anywhere, or a space, "<" or
// ">" outside the leading quoted string.
func checkWireSafe(t *testing.T, s string) {
	t.Helper()
	inQuotes := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == 0x7f {
			t.Fatalf("String() %q has control byte 0x%02x", s, c)
		}
		switch {
		case inQuotes && c == '\\':
			i++
		case c == '"' && (i == 0 || inQuotes):
			inQuotes = !inQuotes
		case !inQuotes && (c == ' ' || c == '<' || c == '>'):
			t.Fatalf("String() %q has %q outside quotes", s, c)
		}
	}
	if inQuotes {
		t.Fatalf("String() %q has an unterminated quote", s)
	}
}

// FuzzParsePolicy checks, for any file content:
//   - Parse does not panic, and fails only with yamlx.Errors naming the file;
//   - a policy that loads decides every sample envelope with a reply whose
//     class fits the action, and Explain tells the same story as Evaluate
//     (exactly one deciding step, naming the decision's rule).
//
// The seed corpus (testdata/fuzz/FuzzParsePolicy) holds the shipped
// policies and broken variants of them.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(rulesPolicy))
	f.Add([]byte(ratePolicy))
	f.Add([]byte("local_domains: [example.org]\n"))
	sessions := []policy.Session{
		{},
		{Listener: "mx", ClientIP: netip.MustParseAddr("203.0.113.5")},
		{Listener: "submission", TLS: true, User: "alice", ClientIP: netip.MustParseAddr("10.20.1.1")},
		{Listener: "submission", TLS: true, User: "carol", ClientIP: netip.MustParseAddr("2001:db8::1")},
	}
	var addrs []policy.Address
	for _, s := range []string{"", "alice@example.org", "a%b@example.org", "x@foreign.test", "carol@uni.example", "x@sub.uni.example"} {
		a, err := policy.ParseAddress(s, false)
		if err != nil {
			f.Fatal(err)
		}
		addrs = append(addrs, a)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := policy.Parse("fuzz.yaml", data)
		if err != nil {
			var es yamlx.Errors
			if !errors.As(err, &es) {
				if !strings.HasPrefix(err.Error(), "fuzz.yaml: ") {
					t.Fatalf("error %q does not name the file", err)
				}
				return
			}
			for _, e := range es {
				if e.File != "fuzz.yaml" || e.Line < 0 || e.Msg == "" {
					t.Fatalf("bad error %#v", e)
				}
			}
			return
		}
		for _, s := range sessions {
			for _, from := range addrs {
				for _, to := range addrs[1:] {
					env := policy.Envelope{From: from, Recipients: 1}
					x := p.Explain(s, env, to)
					d := x.Decision
					if !reflect.DeepEqual(d, p.Evaluate(s, env, to)) {
						t.Fatal("Explain and Evaluate differ")
					}
					class := map[policy.Action]int{policy.Accept: 2, policy.TempFail: 4, policy.Reject: 5}[d.Action]
					if class == 0 || d.Reply.Code/100 != class || d.Reply.Enhanced[0] != class || d.Rule == "" || d.Source == "" {
						t.Fatalf("bad decision %v", d)
					}
					n := 0
					for _, st := range x.Steps {
						if st.Decided {
							n++
						}
					}
					if n != 1 {
						t.Fatalf("%d deciding steps: %+v", n, x.Steps)
					}
				}
			}
		}
	})
}
