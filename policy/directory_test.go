package policy_test

import (
	"strings"
	"testing"

	"github.com/tlsguard/tlsguard/policy"
)

const directoryPolicy = `local_domains: [example.org]
groups:
  - name: staff
    directory_groups: ["CN=Staff,ou=groups,dc=example,dc=org"]
rules:
  - name: staff-relay
    groups: [staff]
    action: accept
sender_ownership:
  - name: own
    may_send_as: ["{addresses}"]
`

// A group's directory_groups take members from the identity's groups
// (without regard to case); {addresses} allows the identity's addresses
// and nothing with routing tricks.
func TestDirectoryGroupsAndAddresses(t *testing.T) {
	p := mustParse(t, directoryPolicy)
	from := mustAddr(t, "A.Liddell@Example.org", false)
	rcpt := mustAddr(t, "carol@foreign.test", false)
	staff := policy.Session{TLS: true, User: "alice", Groups: []string{"cn=staff,ou=groups,dc=example,dc=org"}, Addresses: []string{"a.liddell@example.org"}}
	if d := p.CheckRecipient(staff, from, rcpt); d.Action != policy.Accept || d.Rule != "staff-relay" {
		t.Errorf("staff member: %v by %s", d.Action, d.Rule)
	}
	other := staff
	other.Groups = []string{"cn=students,ou=groups,dc=example,dc=org"}
	if d := p.CheckRecipient(other, from, rcpt); d.Action == policy.Accept {
		t.Errorf("non-member accepted by %s", d.Rule)
	}
	if d := p.CheckSender(staff, from); d.Action != policy.Accept {
		t.Errorf("own directory address refused: %s", d.Reply.Text)
	}
	for _, f := range []string{"alice@example.org", "a.liddell@example.org.evil.test", `"a.liddell@example.org"@example.org`} {
		if d := p.CheckSender(staff, mustAddr(t, f, false)); d.Action == policy.Accept {
			t.Errorf("%s accepted as the user's own", f)
		}
	}
	if _, err := policy.Parse("t.yaml", []byte("rules:\n  - name: r\n    senders: [\"{addresses}\"]\n    action: reject\n    reply: \"550 5.7.1 no\"\n")); err == nil || !strings.Contains(err.Error(), "only in sender_ownership") {
		t.Errorf("{addresses} in a rule: %v", err)
	}
}
