package proxy_test

import (
	"strings"
	"testing"

	"github.com/tlsguard/tlsguard/policy"
)

// The policy's rules, sender ownership, limits and rate limits, as a client
// sees them through the proxy.

func setPolicy(t *testing.T, e *env, src string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse("policy.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	e.srv.SetPolicy(p)
	return p
}

func TestPolicyRuleCustomReply(t *testing.T) {
	e := newEnv(t, nil)
	setPolicy(t, e, `local_domains: [example.org]
rules:
  - name: blocked
    senders: ["*@spam.test"]
    action: reject
    reply: "554 5.7.1 Mail from spam.test is not accepted here"
  - name: greylist
    recipients: ["grey@example.org"]
    action: tempfail
    reply: "451 4.7.1 Greylisted, try again in 5 minutes"
  - name: local
    local_recipient: true
    action: accept
`)
	c := e.session(t, lMX, true, false)
	c.cmd("MAIL FROM:<x@spam.test>", 250)
	c.send("RCPT TO:<alice@example.org>")
	c.expectLine("554 5.7.1 Mail from spam.test is not accepted here")
	c.cmd("RSET", 250)
	c.cmd("MAIL FROM:<x@ok.test>", 250)
	c.send("RCPT TO:<grey@example.org>")
	c.expectLine("451 4.7.1 Greylisted, try again in 5 minutes")
	c.cmd("RCPT TO:<alice@example.org>", 250)
	c.send("RCPT TO:<x@foreign.test>")
	c.expectLine(relayDenied)
	settle()
	if got := e.be.rawLines("RCPT"); len(got) != 1 || !strings.Contains(got[0], "alice@example.org") {
		t.Errorf("backend saw %q", got)
	}
}

// testUser logs in as "alice@example.org", so {user} alone is the address.
func TestPolicySenderOwnership(t *testing.T) {
	e := newEnv(t, nil)
	setPolicy(t, e, `local_domains: [example.org]
sender_ownership:
  - name: own
    may_send_as: ["{user}"]
`)
	c := e.session(t, lSubmission, true, true)
	c.send("MAIL FROM:<bob@example.org>")
	c.expectLine("553 5.7.1 Sender address rejected: not owned by user")
	c.send("MAIL FROM:<>")
	c.expectLine("553 5.7.1 Sender address rejected: not owned by user")
	c.cmd("MAIL FROM:<Alice@Example.ORG>", 250)
	c.cmd("RCPT TO:<carol@foreign.test>", 250)
	// Not logged in: not checked (mail from the internet to local users).
	m := e.session(t, lMX, true, false)
	m.cmd("MAIL FROM:<bob@example.org>", 250)
	m.cmd("RSET", 250)
	m.cmd("MAIL FROM:<>", 250)
	if e.logs.FilterMessage("MAIL refused by policy").Len() != 2 {
		t.Errorf("refusals not logged: %v", e.logs.All())
	}
	l := e.logs.FilterMessage("MAIL refused by policy").All()[0].ContextMap()
	if l["rule"] != "own" || l["rule_source"] != "policy.yaml:3" || l["reply"] != "553 5.7.1 Sender address rejected: not owned by user" {
		t.Errorf("log fields %v", l)
	}
}

func TestPolicyRecipientLimitAndSize(t *testing.T) {
	e := newEnv(t, nil)
	setPolicy(t, e, `local_domains: [example.org]
limits:
  - name: mx
    listeners: [mx]
    max_recipients: 2
    max_message_size: 10K
`)
	c := e.session(t, lMX, true, false)
	c.send("MAIL FROM:<x@foreign.test> SIZE=20000")
	c.expectLine("552 5.3.4 Message too large, at most 10240 bytes")
	c.cmd("MAIL FROM:<x@foreign.test> SIZE=2000", 250)
	c.cmd("RCPT TO:<a@example.org>", 250)
	c.cmd("RCPT TO:<b@example.org>", 250)
	c.send("RCPT TO:<c@example.org>")
	c.expectLine("452 4.5.3 Too many recipients, at most 2 per message")
	// Other listeners are not limited by this entry.
	s := e.session(t, lSubmission, true, false)
	s.cmd("MAIL FROM:<x@foreign.test> SIZE=20000", 250)
	for _, r := range []string{"a", "b", "c"} {
		s.cmd("RCPT TO:<"+r+"@example.org>", 250)
	}
}

// Rate limits: 450 4.7.1 with a hint, and the counters survive a reload.
func TestPolicyRateLimitSurvivesReload(t *testing.T) {
	e := newEnv(t, nil)
	src := `local_domains: [example.org]
rate_limits:
  - name: per-user
    per: user
    window: 1h
    messages: 2
    recipients: 3
`
	setPolicy(t, e, src)
	c := e.session(t, lSubmission, true, true)
	c.cmd("MAIL FROM:<alice@example.org>", 250)
	c.cmd("RCPT TO:<a@foreign.test>", 250)
	c.cmd("RCPT TO:<b@foreign.test>", 250)
	c.cmd("RCPT TO:<c@foreign.test>", 250)
	c.send("RCPT TO:<d@foreign.test>")
	_, text := c.expectClass(4)
	if !strings.HasPrefix(text, "4.7.1 Rate limit reached: too many recipients for user alice@example.org (at most 3 per 1h), try again in ") {
		t.Errorf("RCPT over the rate: %q", text)
	}
	c.cmd("RSET", 250)
	setPolicy(t, e, src+"# reloaded\n")
	c.cmd("MAIL FROM:<alice@example.org>", 250)
	c.cmd("RSET", 250)
	c.send("MAIL FROM:<alice@example.org>")
	code, text := c.expectClass(4)
	if code != 450 || !strings.HasPrefix(text, "4.7.1 Rate limit reached: too many messages for user alice@example.org (at most 2 per 1h)") {
		t.Errorf("third message after reload: %d %q", code, text)
	}
	if e.srv.RateCounters().Len() != 1 {
		t.Errorf("%d counters", e.srv.RateCounters().Len())
	}
}

// A transaction keeps the policy in force at its MAIL; the next one gets
// the new policy.
func TestPolicyReloadAppliesToNewTransactions(t *testing.T) {
	e := newEnv(t, nil)
	c := e.session(t, lSubmission, true, true)
	c.cmd("MAIL FROM:<alice@example.org>", 250)
	c.cmd("RCPT TO:<a@foreign.test>", 250)
	setPolicy(t, e, `local_domains: [example.org]
rules:
  - name: no-relay
    local_recipient: false
    action: reject
    reply: "550 5.7.1 Relaying is switched off"
  - name: local
    local_recipient: true
    action: accept
`)
	c.cmd("RCPT TO:<b@foreign.test>", 250) // same transaction: old policy
	c.cmd("RSET", 250)
	c.cmd("MAIL FROM:<alice@example.org>", 250)
	c.send("RCPT TO:<b@foreign.test>")
	c.expectLine("550 5.7.1 Relaying is switched off")
}
