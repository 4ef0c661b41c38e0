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
