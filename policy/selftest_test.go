package policy_test

import (
	"strings"
	"testing"

	"github.com/tlsguard/tlsguard/policy"
)

func TestOpenRelayCheck(t *testing.T) {
	safe, err := policy.Parse("safe.yaml", []byte("local_domains: [example.org]\ntrusted_networks: [\"192.0.2.0/24\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := safe.OpenRelayCheck([]string{"submission", "mx"}); err != nil {
		t.Errorf("safe policy: %v", err)
	}
	if err := safe.OpenRelayCheck(nil); err != nil {
		t.Errorf("safe policy, any listener: %v", err)
	}
	open, err := policy.Parse("open.yaml", []byte("local_domains: [example.org]\ntrusted_networks: [\"203.0.0.0/8\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = open.OpenRelayCheck([]string{"submission"})
	if err == nil || !strings.Contains(err.Error(), "open relay") || !strings.Contains(err.Error(), "203.0.113.7") {
		t.Errorf("open policy: %v", err)
	}
}

// A rule that opens relaying on one named listener only is found without
// being told the listener names.
func TestOpenRelayCheckNamedListener(t *testing.T) {
	src := `local_domains: [example.org]
allow_open_relay: true
rules:
  - name: mx-anything
    listeners: [mx]
    action: accept
`
	p, err := policy.Parse("mx.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	err = p.OpenRelayCheck(nil)
	if err == nil || !strings.Contains(err.Error(), "listener mx") || !strings.Contains(err.Error(), "mx-anything") {
		t.Errorf("open on mx: %v", err)
	}
	if err := p.OpenRelayCheck([]string{"submission"}); err != nil {
		t.Errorf("only submission configured: %v", err)
	}
}

// Trusting three quarters of IPv4 in three pieces, none of which holds the
// documentation address, is still found: the self-test tries every public
// /8.
func TestOpenRelayCheckSpread(t *testing.T) {
	for _, nets := range []string{
		`["0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/8"]`,
		`["64.0.0.0/4"]`,
		`["2c00::/8"]`,
	} {
		p, err := policy.Parse("wide.yaml", []byte("local_domains: [example.org]\ntrusted_networks: "+nets+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.OpenRelayCheck(nil); err == nil || !strings.Contains(err.Error(), "open relay") || !strings.Contains(err.Error(), "rule trusted_networks") {
			t.Errorf("trusted_networks %s: %v", nets, err)
		}
	}
}

// A small network the policy trusts or names in a rule on purpose, wherever
// it lies, is never taken for an open relay: the probes avoid it.
func TestOpenRelayCheckAvoidsNarrowNetworks(t *testing.T) {
	src := `local_domains: [example.org]
trusted_networks: ["85.200.113.0/24", "85.97.0.0/16", "2a00:c85a::/32"]
rules:
  - name: partner
    networks: ["1.200.113.0/24"]
    action: accept
  - name: users
    authenticated: true
    action: accept
`
	p, err := policy.Parse("narrow.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.OpenRelayCheck([]string{"submission"}); err != nil {
		t.Errorf("narrow networks: %v", err)
	}
	if w := p.Warnings(); len(w) != 0 {
		t.Errorf("narrow networks warned: %q", w)
	}
}

// Trusted networks broader than a /16 of public IPv4 or a /32 of public
// IPv6 are warned about, with their line and key; private ranges are not.
func TestBroadTrustedNetworkWarning(t *testing.T) {
	src := `local_domains: [example.org]
trusted_networks:
  - 10.0.0.0/8
  - 172.16.0.0/12
  - "fc00::/7"
  - 85.0.0.0/15
  - 85.2.0.0/16
  - "2a01::/24"
  - "2a02:1::/32"
`
	p, err := policy.Parse("broad.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	w := p.Warnings()
	want := []string{
		"broad.yaml:6: trusted_networks[3]: 85.0.0.0/15 is broader than a /16 of public addresses",
		"broad.yaml:8: trusted_networks[5]: 2a01::/24 is broader than a /32 of public addresses",
	}
	if len(w) != len(want) {
		t.Fatalf("warnings %q, want %d", w, len(want))
	}
	for i := range want {
		if !strings.HasPrefix(w[i], want[i]) {
			t.Errorf("warning %d: %q, want prefix %q", i, w[i], want[i])
		}
	}
}
