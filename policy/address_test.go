package policy_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/tlsguard/tlsguard/policy"
)

func TestParseAddress(t *testing.T) {
	long := strings.Repeat("a", 63)
	cases := []struct {
		in        string
		utf8      bool
		local     string
		domain    string
		code      string // "" = success, else "553 5.1.3" etc.
		ambiguous bool
	}{
		{in: "", local: "", domain: ""},
		{in: "user@example.org", local: "user", domain: "example.org"},
		{in: "User.Name+tag@EXAMPLE.Org", local: "User.Name+tag", domain: "example.org"},
		{in: "user@sub.example.org", local: "user", domain: "sub.example.org"},
		{in: "user@localhost", local: "user", domain: "localhost"},
		{in: "user@a-b.example", local: "user", domain: "a-b.example"},
		// relay tricks: parsed, but ambiguous
		{in: "user%foreign.test@example.org", local: "user%foreign.test", domain: "example.org", ambiguous: true},
		{in: "foreign.test!user@example.org", local: "foreign.test!user", domain: "example.org", ambiguous: true},
		{in: "victim@foreign.test@example.org", local: "victim@foreign.test", domain: "example.org", ambiguous: true},
		{in: `a"b@example.org`, local: `a"b`, domain: "example.org", ambiguous: true},
		{in: `a\b@example.org`, local: `a\b`, domain: "example.org", ambiguous: true},
		{in: "a b@example.org", local: "a b", domain: "example.org", ambiguous: true},
		{in: "a..b@example.org", local: "a..b", domain: "example.org", ambiguous: true},
		{in: ".a@example.org", local: ".a", domain: "example.org", ambiguous: true},
		{in: "a.@example.org", local: "a.", domain: "example.org", ambiguous: true},
		{in: "a:b@example.org", local: "a:b", domain: "example.org", ambiguous: true},
		{in: "@a:b@example.org", local: "@a:b", domain: "example.org", ambiguous: true},
		// address literals
		{in: "user@[127.0.0.1]", local: "user", domain: "[127.0.0.1]"},
		{in: "user@[IPv6:2001:DB8::1]", local: "user", domain: "[IPv6:2001:db8::1]"},
		{in: "user@[ipv6:::1]", local: "user", domain: "[IPv6:::1]"},
		{in: "user@[IPv6:fe80::1%eth0]", code: "553 5.1.3"},
		{in: "user@[127.0.0.1", code: "553 5.1.3"},
		{in: "user@[1.2.3]", code: "553 5.1.3"},
		{in: "user@[01.2.3.4]", code: "553 5.1.3"},
		{in: "user@[x-tag:foo]", code: "553 5.1.3"},
		{in: "user@[::1]", code: "553 5.1.3"},
		// domain syntax
		{in: "user@example.org.", code: "553 5.1.3"},
		{in: "user@.example.org", code: "553 5.1.3"},
		{in: "user@example..org", code: "553 5.1.3"},
		{in: "user@-example.org", code: "553 5.1.3"},
		{in: "user@example-.org", code: "553 5.1.3"},
		{in: "user@exa_mple.org", code: "553 5.1.3"},
		{in: "user@exa mple.org", code: "553 5.1.3"},
		{in: "user@127.0.0.1", code: "553 5.1.3"},
		{in: "user@" + strings.Repeat("a", 64) + ".org", code: "553 5.1.3"},
		{in: "user@", code: "553 5.1.3"},
		{in: "@example.org", code: "553 5.1.3"},
		{in: "userexample.org", code: "553 5.1.3"},
		{in: "postmaster", code: "553 5.1.3"},
		{in: "user@xn--zz.example", code: "553 5.1.3"}, // not valid punycode
		// control bytes and non-ASCII
		{in: "us\x00er@example.org", code: "553 5.1.3"},
		{in: "user\r\nRCPT TO:<x@y>@example.org", code: "553 5.1.3"},
		{in: "us\x7fer@example.org", code: "553 5.1.3"},
		{in: "us\ter@example.org", code: "553 5.1.3"},
		{in: "user@exam\x00ple.org", code: "553 5.1.3"},
		{in: "jörg@example.org", code: "553 5.6.7"},
		{in: "user@bücher.example", code: "553 5.6.7"},
		{in: "jörg@example.org", utf8: true, local: "jörg", domain: "example.org"},
		{in: "user@bücher.example", utf8: true, local: "user", domain: "xn--bcher-kva.example"},
		{in: "user@BÜCHER.example", utf8: true, local: "user", domain: "xn--bcher-kva.example"},
		{in: "user@XN--BCHER-KVA.example", local: "user", domain: "xn--bcher-kva.example"},
		{in: "user@bücher.example.", utf8: true, code: "553 5.1.3"},
		{in: "user@bücher。example。", utf8: true, code: "553 5.1.3"},
		{in: "us\xffer@example.org", utf8: true, code: "553 5.1.3"},
		{in: "us\u0085er@example.org", utf8: true, code: "553 5.1.3"}, // C1 control
		// fullwidth look-alikes of routing characters are ambiguous too
		{in: "user\uff20foreign.test@example.org", utf8: true, local: "user\uff20foreign.test", domain: "example.org", ambiguous: true},
		{in: "user\uff05foreign.test@example.org", utf8: true, local: "user\uff05foreign.test", domain: "example.org", ambiguous: true},
		{in: "foreign\uff01user@example.org", utf8: true, local: "foreign\uff01user", domain: "example.org", ambiguous: true},
		{in: "\uff55ser@example.org", utf8: true, local: "\uff55ser", domain: "example.org"},
		{in: "user@\uff45xample.org", utf8: true, local: "user", domain: "example.org"},
		{in: "user@ex\u00adample.org", utf8: true, local: "user", domain: "example.org"},
		// lengths
		{in: long + "a@example.org", local: long + "a", domain: "example.org"},
		// Local parts over RFC 5321's 64 octets are accepted (VERP/SRS
		// bounce senders); only the 254-octet whole-address limit holds.
		{in: long + "aa@example.org", local: long + "aa", domain: "example.org"},
		{in: long + " @example.org", local: long + " ", domain: "example.org", ambiguous: true},
		{in: "SRS0=HHH=TT=example.net=" + strings.Repeat("b", 200) + "@example.org", local: "SRS0=HHH=TT=example.net=" + strings.Repeat("b", 200), domain: "example.org"},
		{in: strings.Repeat("a", 242) + "@example.org", local: strings.Repeat("a", 242), domain: "example.org"},
		{in: strings.Repeat("a", 243) + "@example.org", code: "553 5.1.3"},
		{in: strings.Repeat("a", 240) + " @example.org", code: "553 5.1.3"}, // 255 octets once quoted
		{in: "u@" + strings.Repeat(long+".", 3) + strings.Repeat("a", 60), local: "u", domain: strings.Repeat(long+".", 3) + strings.Repeat("a", 60)},
		{in: "uu@" + strings.Repeat(long+".", 3) + strings.Repeat("a", 60), code: "553 5.1.3"},
		{in: strings.Repeat("a", 2000) + "@example.org", code: "553 5.1.3"},
		{in: "user@" + strings.Repeat("\u00ad", 600) + "example.org", utf8: true, code: "553 5.1.3"},
	}
	for _, tc := range cases {
		name := tc.in
		if len(name) > 40 {
			name = name[:40] + "..."
		}
		t.Run(fmt.Sprintf("%q/utf8=%v", name, tc.utf8), func(t *testing.T) {
			a, err := policy.ParseAddress(tc.in, tc.utf8)
			if tc.code != "" {
				var ae *policy.AddressError
				if !errors.As(err, &ae) {
					t.Fatalf("got %+v, %v; want *AddressError %s", a, err, tc.code)
				}
				if got := ae.Reply.String(); !strings.HasPrefix(got, tc.code+" ") {
					t.Fatalf("reply %q, want %s (reason %q)", got, tc.code, ae.Reason)
				}
				return
			}
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if a.Local != tc.local || a.Domain != tc.domain {
				t.Fatalf("got %q @ %q, want %q @ %q", a.Local, a.Domain, tc.local, tc.domain)
			}
			if a.Ambiguous() != tc.ambiguous && !a.IsNull() {
				t.Fatalf("Ambiguous() = %v, want %v", a.Ambiguous(), tc.ambiguous)
			}
		})
	}
}

func TestAddressString(t *testing.T) {
	cases := []struct{ local, domain, want string }{
		{"", "", ""},
		{"user", "example.org", "user@example.org"},
		{"First.Last+tag", "example.org", "First.Last+tag@example.org"},
		{"user%foreign.test", "example.org", "user%foreign.test@example.org"},
		{"victim@foreign.test", "example.org", `"victim@foreign.test"@example.org`},
		{`a"b\c`, "example.org", `"a\"b\\c"@example.org`},
		{"a b", "example.org", `"a b"@example.org`},
		{"a..b", "example.org", `"a..b"@example.org`},
		{"jörg", "example.org", "jörg@example.org"},
		{"user", "[IPv6:::1]", "user@[IPv6:::1]"},
	}
	for _, tc := range cases {
		a := policy.Address{Local: tc.local, Domain: tc.domain}
		if got := a.String(); got != tc.want {
			t.Errorf("%q@%q: String() = %q, want %q", tc.local, tc.domain, got, tc.want)
		}
	}
	if !(policy.Address{}).IsNull() {
		t.Error("zero Address is not null")
	}
}

// TestStringRoundTripsThroughGoSMTP sends String() of tricky addresses to a
// real go-smtp server and checks that its parser hands back exactly
// Local@Domain, so what the backend receives is what the policy judged. It
// also checks goSMTPUnquote, the model of that parser the fuzz target uses.
func TestStringRoundTripsThroughGoSMTP(t *testing.T) {
	inputs := []string{
		"user@example.org",
		"user%foreign.test@example.org",
		"foreign.test!user@example.org",
		"victim@foreign.test@example.org",
		`a"b\c@example.org`,
		"a b@example.org",
		"a..b@example.org",
		".a@example.org",
		"a>b@example.org",
		"a<b@example.org",
		"@a:b@example.org",
		"a(b)@example.org",
		`"@example.org`,
		"jörg@bücher.example",
		"user@[IPv6:2001:db8::1]",
	}
	be := &recorder{}
	srv := smtp.NewServer(be)
	srv.Domain = "localhost"
	srv.AllowInsecureAuth = true
	srv.EnableSMTPUTF8 = true
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })

	c, err := textproto.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	expect := func(code int, format string, args ...any) {
		t.Helper()
		if format != "" {
			if err := c.PrintfLine(format, args...); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := c.ReadResponse(code); err != nil {
			t.Fatalf("%s: %v", fmt.Sprintf(format, args...), err)
		}
	}
	expect(220, "")
	expect(250, "EHLO test")
	expect(250, "MAIL FROM:<> SMTPUTF8")
	for _, in := range inputs {
		a, err := policy.ParseAddress(in, true)
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		expect(250, "RCPT TO:<%s>", a)
		got := be.last()
		if want := a.Local + "@" + a.Domain; got != want {
			t.Errorf("%q: go-smtp parsed <%s> as %q, want %q", in, a, got, want)
		}
		if m, ok := goSMTPUnquote(a.String()); !ok || m != got {
			t.Errorf("%q: goSMTPUnquote(%q) = %q, %v; go-smtp gave %q", in, a, m, ok, got)
		}
		b, err := policy.ParseAddress(got, true)
		if err != nil || b != a {
			t.Errorf("%q: reparsed as %+v, %v; want %+v", in, b, err, a)
		}
	}
}

// recorder is a go-smtp backend that remembers the last RCPT argument.
type recorder struct {
	mu   sync.Mutex
	rcpt string
}

func (r *recorder) NewSession(*smtp.Conn) (smtp.Session, error) { return r, nil }
func (r *recorder) Reset()                                      {}
func (r *recorder) Logout() error                               { return nil }
func (r *recorder) Mail(string, *smtp.MailOptions) error        { return nil }
func (r *recorder) Data(io.Reader) error                        { return nil }
func (r *recorder) Rcpt(to string, _ *smtp.RcptOptions) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rcpt = to
	return nil
}
func (r *recorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rcpt
}

// goSMTPUnquote models go-smtp's parseMailbox (parse.go) on a path
// without angle brackets: a quoted or dot-string local part, "@", then the
// domain up to a space, tab or ">". ok is false when go-smtp would refuse
// the string or leave part of it unread.
func goSMTPUnquote(s string) (string, bool) {
	var b strings.Builder
	i := 0
	if strings.HasPrefix(s, `"`) {
		i = 1
		for {
			if i >= len(s) {
				return "", false
			}
			c := s[i]
			i++
			if c == '"' {
				break
			}
			if c == '\\' {
				if i >= len(s) {
					return "", false
				}
				c = s[i]
				i++
			}
			b.WriteByte(c)
		}
	} else {
		for i < len(s) && s[i] != '@' {
			if strings.IndexByte(`()<>[]:;\,"`+" \t", s[i]) >= 0 {
				return "", false
			}
			b.WriteByte(s[i])
			i++
		}
	}
	if b.Len() == 0 || i >= len(s) || s[i] != '@' {
		return "", false
	}
	b.WriteByte('@')
	i++
	start := i
	for i < len(s) && s[i] != ' ' && s[i] != '\t' && s[i] != '>' {
		i++
	}
	if i == start || i != len(s) {
		return "", false
	}
	b.WriteString(s[start:])
	return b.String(), true
}
