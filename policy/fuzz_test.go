package policy_test

import (
	"errors"
	"strings"
	"testing"

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
