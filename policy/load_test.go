package policy_test

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tlsguard/tlsguard/internal/yamlx"
	"github.com/tlsguard/tlsguard/policy"
)

func TestParseValid(t *testing.T) {
	p := mustParse(t, `# comment
local_domains:
  - Example.ORG
  - "*.example.org"
  - bücher.example
trusted_networks:
  - 127.0.0.0/8
  - ::1/128
  - 192.0.2.10
  - "::ffff:10.0.0.0/104"
`)
	var got []string
	for _, d := range p.LocalDomains() {
		got = append(got, d.String())
	}
	if want := "example.org *.example.org xn--bcher-kva.example"; strings.Join(got, " ") != want {
		t.Errorf("LocalDomains = %q, want %q", got, want)
	}
	nets := p.TrustedNetworks()
	want := []netip.Prefix{
		netip.MustParsePrefix("127.0.0.0/8"),
		netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("192.0.2.10/32"),
		netip.MustParsePrefix("10.0.0.0/8"),
	}
	if len(nets) != len(want) {
		t.Fatalf("TrustedNetworks = %v, want %v", nets, want)
	}
	for i := range want {
		if nets[i] != want[i] {
			t.Errorf("TrustedNetworks[%d] = %v, want %v", i, nets[i], want[i])
		}
	}
	if p.File() != "test.yaml" {
		t.Errorf("File() = %q", p.File())
	}
}

func TestParseEmpty(t *testing.T) {
	for _, src := range []string{"", "# nothing\n", "local_domains:\ntrusted_networks:\n"} {
		p := mustParse(t, src)
		d := p.CheckRecipient(policy.Session{ClientIP: netip.MustParseAddr("127.0.0.1")}, policy.Address{}, mustAddr(t, "a@example.org", false))
		if d.Action != policy.Reject {
			t.Errorf("%q: empty policy gave %v", src, d)
		}
	}
}

func TestParseErrorsNameFileLineKey(t *testing.T) {
	cases := []struct{ src, want string }{
		{"local_domains: [example.org.]\n", "test.yaml:1: local_domains[0]: \"example.org.\" is not a valid domain: domain ends with a dot"},
		{"local_domains:\n  - example.org\n  - exa_mple.org\n", "test.yaml:3: local_domains[1]: \"exa_mple.org\" is not a valid domain"},
		{"local_domains:\n  - example.org\n  - EXAMPLE.org\n", "test.yaml:3: local_domains[1]: duplicate of local_domains[0] on line 2"},
		{"local_domains:\n  - bücher.example\n  - xn--bcher-kva.example\n", "test.yaml:3: local_domains[1]: duplicate of local_domains[0] on line 2"},
		{"local_domains:\n  - \"*.example.org\"\n  - \"*.example.org\"\n", "test.yaml:3: local_domains[1]: duplicate"},
		{"local_domains: [\"*.org\"]\n", "test.yaml:1: local_domains[0]: \"*.org\": a wildcard over a top-level domain"},
		{"local_domains: [\"a.*.org\"]\n", "test.yaml:1: local_domains[0]: \"a.*.org\": a wildcard is allowed only"},
		{"local_domains: [\"*\"]\n", "test.yaml:1: local_domains[0]: \"*\": a wildcard is allowed only"},
		{"local_domains: [\"[127.0.0.1]\"]\n", "test.yaml:1: local_domains[0]: \"[127.0.0.1]\": address literals are never local"},
		{"local_domains: [127.0.0.1]\n", "test.yaml:1: local_domains[0]: \"127.0.0.1\" is not a valid domain: top-level label is numeric"},
		{"local_domains:\n  - {a: b}\n", "test.yaml:2: local_domains[0]: must be a domain such as example.org or \"*.example.org\", not a mapping"},
		{"local_domains:\n  - true\n", "test.yaml:2: local_domains[0]: must be a domain such as example.org or \"*.example.org\", not bool \"true\""},
		{"trusted_networks:\n  - 10\n", "test.yaml:2: trusted_networks[0]: must be a network such as 192.0.2.0/24 or \"2001:db8::/32\", not int \"10\""},
		{"local_domains: example.org\n", "test.yaml:1: local_domains: must be a list"},
		{"local_domains:\n  - *.example.org\n", `a wildcard domain must be quoted`},
		{"trusted_networks:\n  - 10.0.0.0/33\n", "test.yaml:2: trusted_networks[0]: \"10.0.0.0/33\" is not a network"},
		{"trusted_networks:\n  - 10.1.2.3/8\n", "test.yaml:2: trusted_networks[0]: \"10.1.2.3/8\" has host bits set; did you mean 10.0.0.0/8?"},
		{"trusted_networks:\n  - localhost\n", "test.yaml:2: trusted_networks[0]: \"localhost\" is not a network"},
		{"trusted_networks:\n  - fe80::1%eth0\n", "test.yaml:2: trusted_networks[0]: \"fe80::1%eth0\" is not a network"},
		{"trusted_networks:\n  - \"::ffff:0.0.0.0/8\"\n", "test.yaml:2: trusted_networks[0]: \"::ffff:0.0.0.0/8\": an IPv4-mapped prefix needs at least 96 bits"},
		{"trusted_networks:\n  - 10.0.0.0/8\n  - \"::ffff:10.0.0.0/104\"\n", "test.yaml:3: trusted_networks[1]: duplicate of trusted_networks[0] on line 2"},
		{"trusted_network: [10.0.0.0/8]\n", "test.yaml:1: trusted_network: unknown key"},
		{"relay: yes\n", "test.yaml:1: relay: unknown key"},
	}
	for _, tc := range cases {
		_, err := policy.Parse("test.yaml", []byte(tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q:\n got %v\nwant %q", tc.src, err, tc.want)
			continue
		}
		var es yamlx.Errors
		if !errors.As(err, &es) {
			t.Errorf("%q: error is %T, want yamlx.Errors", tc.src, err)
		}
	}
}

func TestParseReportsAllErrorsSorted(t *testing.T) {
	src := "local_domains:\n  - a.example\n  - bad_domain\n  - A.example\ntrusted_networks:\n  - nonsense\nbogus: 1\n"
	_, err := policy.Parse("p.yaml", []byte(src))
	var es yamlx.Errors
	if !errors.As(err, &es) {
		t.Fatalf("got %v", err)
	}
	var lines []int
	for _, e := range es {
		lines = append(lines, e.Line)
	}
	if len(lines) != 4 || lines[0] != 3 || lines[1] != 4 || lines[2] != 6 || lines[3] != 7 {
		t.Fatalf("lines %v in:\n%v", lines, err)
	}
}

func TestLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "p.yaml")
	if err := os.WriteFile(path, []byte("local_domains: [example.org]\n  bad indent\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := policy.Load(path); err == nil || !strings.HasPrefix(err.Error(), path+":") {
		t.Errorf("Load bad file: %v", err)
	}
	if _, err := policy.Load(filepath.Join(t.TempDir(), "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load missing file: %v", err)
	}
}

// TestDefaultPolicy loads the policy that ships and checks what it promises.
func TestDefaultPolicy(t *testing.T) {
	p, err := policy.Load("../policies/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr
	from := policy.Address{}
	cases := []struct {
		ip, rcpt string
		action   policy.Action
	}{
		{"203.0.113.1", "user@example.org", policy.Accept},
		{"203.0.113.1", "user@EXAMPLE.org", policy.Accept},
		{"203.0.113.1", "user@sub.example.org", policy.Reject},
		{"203.0.113.1", "user@foreign.test", policy.Reject},
		{"203.0.113.1", "user%foreign.test@example.org", policy.Reject},
		// Secure by default: nothing is trusted, not even loopback.
		{"127.0.0.1", "user@foreign.test", policy.Reject},
		{"::1", "user@foreign.test", policy.Reject},
		{"::ffff:127.0.0.1", "user@foreign.test", policy.Reject},
		{"10.0.0.1", "user@foreign.test", policy.Reject},
	}
	for _, tc := range cases {
		d := p.CheckRecipient(policy.Session{ClientIP: ip(tc.ip)}, from, mustAddr(t, tc.rcpt, false))
		if d.Action != tc.action {
			t.Errorf("%s -> %s: %v (%s), want %v", tc.ip, tc.rcpt, d.Action, d.Rule, tc.action)
		}
	}
}
