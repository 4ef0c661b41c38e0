package policy_test

import (
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/tlsguard/tlsguard/policy"
)

// Every kind of load error names file, line and key.
func TestParseRuleErrors(t *testing.T) {
	const rule = "rules:\n  - name: r\n"
	cases := []struct{ name, src, want string }{
		{"unknown key", rule + "    action: accept\n    local_recipient: true\n    actoin: x\n", "test.yaml:5: rules[0].actoin: unknown key"},
		{"wrong type", rule + "    tls: yes\n    action: reject\n", "test.yaml:3: rules[0].tls: must be true or false"},
		{"bad CIDR", rule + "    networks: [10.0.0.0/33]\n    action: reject\n", `test.yaml:3: rules[0].networks[0]: "10.0.0.0/33" is not a network`},
		{"host bits", rule + "    networks: [10.1.0.0/8]\n    action: reject\n", "did you mean 10.0.0.0/8?"},
		{"regex", rule + "    senders: [\"^.*@spam\\\\.example$\"]\n    action: reject\n", "test.yaml:3: rules[0].senders[0]: \"^.*@spam\\\\.example$\": regular expressions are not supported"},
		{"re: prefix", rule + "    senders: [\"re:.*\"]\n    action: reject\n", "regular expressions are not supported"},
		{"no @", rule + "    recipients: [example.org]\n    action: reject\n", `test.yaml:3: rules[0].recipients[0]: "example.org" is not a pattern`},
		{"user outside ownership", rule + "    senders: [\"{user}@example.org\"]\n    action: reject\n", "{user} is allowed only in sender_ownership"},
		{"literal", rule + "    recipients: [\"*@[127.0.0.1]\"]\n    action: reject\n", "address literals cannot be matched"},
		{"bad domain", rule + "    recipients: [\"*@exa_mple.org\"]\n    action: reject\n", `"exa_mple.org" is not a valid domain`},
		{"mid wildcard", rule + "    recipients: [\"*@a.*.org\"]\n    action: reject\n", "in the domain a wildcard is allowed only"},
		{"unquoted star", rule + "    recipients: [*@example.org]\n    action: reject\n", "test.yaml:3"},
		{"missing name", "rules:\n  - action: reject\n", "test.yaml:2: rules[0].name: is required"},
		{"bad name", "rules:\n  - name: \"a b\"\n    action: reject\n", "test.yaml:2: rules[0].name: \"a b\": use letters"},
		{"reserved name", "rules:\n  - name: default\n    action: reject\n", `"default" is reserved`},
		{"duplicate name", "rules:\n  - name: a\n    tls: false\n    action: reject\n  - name: a\n    tls: true\n    action: reject\n", `test.yaml:5: rules[1].name: duplicate name "a" (already used by rules[0] on line 2)`},
		{"duplicate across sections", "rules:\n  - name: a\n    tls: false\n    action: reject\nlimits:\n  - name: a\n    max_recipients: 3\n", `test.yaml:6: limits[0].name: duplicate name "a" (already used by rules[0] on line 2)`},
		{"missing action", rule + "    tls: true\n", "test.yaml:2: rules[0].action: is required"},
		{"bad action", rule + "    action: allow\n", `test.yaml:3: rules[0].action: "allow" is not one of accept, reject, tempfail, require_auth`},
		{"reply on accept", rule + "    local_recipient: true\n    action: accept\n    reply: \"550 5.7.1 no\"\n", "test.yaml:5: rules[0].reply: an accepted recipient gets the backend's own reply"},
		{"reply format", rule + "    action: reject\n    reply: \"no way\"\n", `test.yaml:4: rules[0].reply: "no way" is not a reply`},
		{"reply class", rule + "    action: reject\n    reply: \"550 4.7.1 no\"\n", "must start with 5"},
		{"tempfail 5xx", rule + "    action: tempfail\n    reply: \"550 5.7.1 no\"\n", "tempfail needs a 4xx reply"},
		{"bad mode", rule + "    action: reject\n    mode: audit\n", `test.yaml:4: rules[0].mode: "audit" is not one of enforce, shadow`},
		{"reject 4xx", rule + "    action: reject\n    reply: \"450 4.7.1 no\"\n", "reject needs a 5xx reply"},
		{"reply control", rule + "    action: reject\n    reply: \"550 5.7.1 a\\tb\"\n", "printable ASCII"},
		{"open relay", rule + "    action: accept\n", "test.yaml:3: rules[0].action: this rule accepts any recipient from any client: an open relay"},
		{"open relay any pattern", rule + "    recipients: [\"*@*\"]\n    authenticated: false\n    action: accept\n", "an open relay"},
		{"open relay /0", rule + "    networks: [0.0.0.0/0]\n    action: accept\n", "an open relay"},
		{"unknown group", rule + "    groups: [staff]\n    action: accept\n", `test.yaml:3: rules[0].groups[0]: unknown group "staff" (no groups are defined`},
		{"users but not authenticated", rule + "    users: [alice]\n    authenticated: false\n    action: reject\n", "authenticated: false with users or groups can never match"},
		{"empty list", rule + "    listeners: []\n    action: reject\n", "test.yaml:3: rules[0].listeners: an empty list matches nothing"},
		{"shadowed", "rules:\n  - name: all-auth\n    authenticated: true\n    action: accept\n  - name: alice\n    users: [alice]\n    action: reject\n",
			`test.yaml:5: rules[1].name: rule "alice" can never match: rule "all-auth" on line 2 matches everything it matches`},
		{"shadowed by domain wildcard", "rules:\n  - name: sub\n    recipients: [\"*@*.example.org\"]\n    action: reject\n  - name: one\n    recipients: [\"a@b.example.org\"]\n    action: reject\n", `rule "one" can never match`},
		{"shadowed by catch-all", "rules:\n  - name: all\n    action: require_auth\n  - name: later\n    local_recipient: true\n    action: accept\n", `test.yaml:4: rules[1].name: rule "later" can never match: rule "all" on line 2`},
		{"duplicate group", "groups:\n  - name: g\n    users: [a]\n  - name: g\n    users: [b]\n", `test.yaml:4: groups[1].name: duplicate group "g" (already defined on line 2)`},
		{"group user twice", "groups:\n  - name: g\n    users: [a, a]\n", `test.yaml:3: groups[0].users[1]: user "a" is listed twice`},
		{"group without users", "groups:\n  - name: g\n", "test.yaml:2: groups[0].users: is required"},
		{"ownership without patterns", "sender_ownership:\n  - name: o\n    users: [a]\n", "test.yaml:2: sender_ownership[0].may_send_as: is required"},
		{"ownership bad pattern", "sender_ownership:\n  - name: o\n    may_send_as: [\"{usr}@x.org\"]\n", `test.yaml:3: sender_ownership[0].may_send_as[0]: "{usr}@x.org": braces are allowed only as {user}`},
		{"limit sets nothing", "limits:\n  - name: l\n    groups: []\n", "test.yaml:2: limits[0].name: sets no limit"},
		{"limit zero", "limits:\n  - name: l\n    max_recipients: 0\n", "test.yaml:3: limits[0].max_recipients: must be at least 1"},
		{"limit size", "limits:\n  - name: l\n    max_message_size: 12Q\n", `test.yaml:3: limits[0].max_message_size: "12Q" is not a size`},
		{"rate per", "rate_limits:\n  - name: r\n    per: host\n    window: 1h\n    messages: 3\n", `test.yaml:3: rate_limits[0].per: "host" is not user or client_ip`},
		{"rate window", "rate_limits:\n  - name: r\n    per: user\n    messages: 3\n", "test.yaml:2: rate_limits[0].window: is required"},
		{"rate window type", "rate_limits:\n  - name: r\n    per: user\n    window: soon\n    messages: 3\n", `test.yaml:4: rate_limits[0].window: "soon" is not a duration`},
		{"rate counts nothing", "rate_limits:\n  - name: r\n    per: user\n    window: 1h\n", "test.yaml:2: rate_limits[0].name: counts nothing"},
		{"trusted everything", "trusted_networks: [\"::/0\"]\n", "test.yaml:1: trusted_networks[0]: ::/0 is every address: trusting it makes an open relay"},
		{"unknown top-level key", "rule:\n  - name: x\n", "test.yaml:1: rule: unknown key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := policy.Parse("test.yaml", []byte(tc.src))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v\nwant %q", err, tc.want)
			}
		})
	}
}

func TestParseReportsAllErrors(t *testing.T) {
	_, err := policy.Parse("test.yaml", []byte("rules:\n  - name: a\n    action: nope\n  - name: b\n    action: accept\n"))
	if err == nil || strings.Count(err.Error(), "\n") != 1 {
		t.Fatalf("want two errors, got %v", err)
	}
}

// Rules that only look alike are not reported as unreachable.
func TestNotShadowed(t *testing.T) {
	for _, src := range []string{
		"rules:\n  - name: a\n    users: [alice]\n    action: accept\n  - name: b\n    authenticated: true\n    action: accept\n",
		"rules:\n  - name: a\n    tls: true\n    action: require_auth\n  - name: b\n    action: reject\n",
		"rules:\n  - name: a\n    recipients: [\"*@example.org\"]\n    action: reject\n  - name: b\n    recipients: [\"*@sub.example.org\"]\n    action: reject\n",
		"rules:\n  - name: a\n    networks: [10.0.0.0/16]\n    action: accept\n  - name: b\n    networks: [10.0.0.0/8]\n    action: accept\n",
		"rules:\n  - name: a\n    listeners: [mx]\n    action: reject\n  - name: b\n    listeners: [mx, submission]\n    action: reject\n",
		// a granting pattern skips tricky addresses that a later refusing one still catches
		"rules:\n  - name: a\n    recipients: [\"*@example.org\"]\n    authenticated: true\n    action: accept\n  - name: b\n    recipients: [\"*@example.org\"]\n    authenticated: true\n    action: reject\n",
	} {
		if _, err := policy.Parse("test.yaml", []byte(src)); err != nil {
			t.Errorf("%s: %v", src, err)
		}
	}
}

const rulesPolicy = `
local_domains: [example.org, "*.example.org"]
trusted_networks: [192.0.2.0/24]
groups:
  - name: staff
    users: [alice, bob]
rules:
  - name: block
    senders: ["*@spam.test", "*@*.spam.test", "bounce-*@bulk.test"]
    action: reject
    reply: "554 5.7.1 Go away"
  - name: greylist
    senders: ["<>"]
    listeners: [submission]
    action: tempfail
  - name: local
    local_recipient: true
    action: accept
  - name: partner
    recipients: ["*@partner.test", "ceo@*.partner2.test"]
    networks: ["198.51.100.0/24", "2001:db8::/32"]
    action: accept
  - name: plaintext
    tls: false
    trusted_network: false
    action: reject
    reply: "530 5.7.0 Must issue a STARTTLS command first"
  - name: staff
    groups: [staff]
    action: accept
  - name: others
    action: require_auth
`

func TestRuleConditionsAndOrder(t *testing.T) {
	p := mustParse(t, rulesPolicy)
	ip := netip.MustParseAddr
	anon := policy.Session{Listener: "mx", ClientIP: ip("203.0.113.5")}
	tlsAnon := anon
	tlsAnon.TLS = true
	alice := tlsAnon
	alice.User, alice.Listener = "alice", "submission"
	carol := alice
	carol.User = "carol"
	partner := anon
	partner.ClientIP = ip("198.51.100.9")
	partner6 := anon
	partner6.ClientIP = ip("2001:db8::25")
	trusted := anon
	trusted.ClientIP = ip("192.0.2.1")
	cases := []struct {
		name     string
		s        policy.Session
		from, to string
		action   policy.Action
		rule     string
		reply    string
	}{
		{"blocked sender first", alice, "x@spam.test", "a@example.org", policy.Reject, "block", "554 5.7.1 Go away"},
		{"blocked subdomain", anon, "x@mx.SPAM.test", "a@example.org", policy.Reject, "block", ""},
		{"glob local part", anon, "bounce-123@bulk.test", "a@example.org", policy.Reject, "block", ""},
		{"glob local part no match", anon, "news@bulk.test", "a@example.org", policy.Accept, "local", ""},
		{"tricky sender still blocked", anon, "a%b@spam.test", "a@example.org", policy.Reject, "block", ""},
		{"null sender on submission", alice, "", "x@foreign.test", policy.TempFail, "greylist", "450 4.7.1 Temporarily refused by policy, try again later"},
		{"null sender on mx is local mail", anon, "", "a@example.org", policy.Accept, "local", ""},
		{"local", anon, "x@foreign.test", "A@Example.ORG", policy.Accept, "local", "250 2.1.5 Ok"},
		{"local wildcard", anon, "x@foreign.test", "a@b.example.org", policy.Accept, "local", ""},
		{"percent hack not local", tlsAnon, "x@foreign.test", "a%foreign.test@example.org", policy.Reject, "others", "550 5.7.1 Relaying denied. Authentication required."},
		{"partner network", partner, "x@foreign.test", "a@partner.test", policy.Accept, "partner", ""},
		{"partner IPv6", partner6, "x@foreign.test", "a@PARTNER.test", policy.Accept, "partner", ""},
		{"partner exact local", partner, "x@foreign.test", "ceo@a.partner2.test", policy.Accept, "partner", ""},
		{"partner wrong local", partner, "x@foreign.test", "cfo@a.partner2.test", policy.Reject, "plaintext", ""},
		{"partner tricky rcpt never granted", partner, "x@foreign.test", "a!b@partner.test", policy.Reject, "plaintext", ""},
		{"partner from elsewhere", anon, "x@foreign.test", "a@partner.test", policy.Reject, "plaintext", "530 5.7.0 Must issue a STARTTLS command first"},
		{"trusted plaintext passes plaintext rule", trusted, "x@foreign.test", "a@foreign.test", policy.Reject, "others", ""},
		{"staff relay", alice, "alice@example.org", "x@foreign.test", policy.Accept, "staff", ""},
		{"require_auth with login", carol, "carol@example.org", "x@foreign.test", policy.Accept, "others", ""},
		{"require_auth without login", tlsAnon, "x@foreign.test", "x@foreign.test", policy.Reject, "others", "550 5.7.1 Relaying denied. Authentication required."},
	}
	for _, tc := range cases {
		from := mustAddr(t, tc.from, false)
		d := p.CheckRecipient(tc.s, from, mustAddr(t, tc.to, false))
		if d.Action != tc.action || d.Rule != tc.rule || (tc.reply != "" && d.Reply.String() != tc.reply) {
			t.Errorf("%s: got %v", tc.name, d)
		}
		if !strings.HasPrefix(d.Source, "test.yaml:") {
			t.Errorf("%s: source %q", tc.name, d.Source)
		}
	}
}

// A rule in mode: shadow never decides: the next rule does, and the
// decision says what the shadow rule would have done when that differs.
// The same file with the mode removed enforces it.
func TestShadowRule(t *testing.T) {
	const src = `local_domains: [uni.example]
rules:
  - name: block-spam
    senders: ["*@spam.example"]
    action: reject
    reply: "550 5.7.1 No spam"
    mode: shadow
  - name: quiet-accept
    senders: ["*@quiet.example"]
    local_recipient: true
    action: accept
    mode: shadow
  - name: local
    local_recipient: true
    action: accept
  - name: relay
    action: require_auth
`
	p, err := policy.Parse("shadow.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	s := policy.Session{Listener: "mx", ClientIP: netip.MustParseAddr("203.0.113.9")}
	spam, rcpt := mustAddr(t, "x@spam.example", false), mustAddr(t, "a@uni.example", false)
	d := p.Evaluate(s, policy.Envelope{From: spam}, rcpt)
	if d.Action != policy.Accept || d.Rule != "local" {
		t.Fatalf("shadow rule decided: %v", d)
	}
	want := []policy.Shadow{{Rule: "block-spam", Source: "shadow.yaml:3", Would: policy.Reject, Reply: policy.Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: "No spam"}}}
	if !reflect.DeepEqual(d.Shadow, want) {
		t.Errorf("Shadow = %+v, want %+v", d.Shadow, want)
	}
	// A shadow rule that would decide the same is not reported.
	if d := p.Evaluate(s, policy.Envelope{From: mustAddr(t, "x@quiet.example", false)}, rcpt); d.Shadow != nil || d.Rule != "local" {
		t.Errorf("same outcome reported: %v %+v", d, d.Shadow)
	}
	// Refused anyway: the shadow rule would refuse too, nothing to report.
	if d := p.Evaluate(s, policy.Envelope{From: spam}, mustAddr(t, "b@foreign.test", false)); d.Action != policy.Reject || d.Shadow != nil {
		t.Errorf("relay: %v %+v", d, d.Shadow)
	}
	x := p.Explain(s, policy.Envelope{From: spam}, rcpt)
	var shadowSteps, decided int
	for _, st := range x.Steps {
		if st.Shadow {
			shadowSteps++
			if st.Rule != "block-spam" || st.Decided || !strings.Contains(st.Note, "not enforced") {
				t.Errorf("shadow step %+v", st)
			}
		}
		if st.Decided {
			decided++
			if st.Rule != "local" {
				t.Errorf("decided by %+v", st)
			}
		}
	}
	if shadowSteps != 1 || decided != 1 {
		t.Errorf("steps %+v", x.Steps)
	}

	// Enforcing: the only change is the mode line.
	q, err := policy.Parse("shadow.yaml", []byte(strings.Replace(src, "    reply: \"550 5.7.1 No spam\"\n    mode: shadow\n", "    reply: \"550 5.7.1 No spam\"\n", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if d := q.Evaluate(s, policy.Envelope{From: spam}, rcpt); d.Action != policy.Reject || d.Rule != "block-spam" || d.Shadow != nil {
		t.Errorf("enforced: %v %+v", d, d.Shadow)
	}
}

func TestDefaultWhenNoRuleMatches(t *testing.T) {
	p := mustParse(t, "rules:\n  - name: local\n    local_recipient: true\n    action: accept\n")
	d := p.CheckRecipient(policy.Session{User: "alice"}, policy.Address{}, mustAddr(t, "a@foreign.test", false))
	if d.Action != policy.Reject || d.Rule != policy.RuleDefault || d.Reply.String() != "550 5.7.1 Relaying denied. Authentication required." || d.Source != "test.yaml" {
		t.Fatalf("got %v", d)
	}
	// An explicit empty rules section has no built-in rules.
	p = mustParse(t, "local_domains: [example.org]\nrules: []\n")
	if d := p.CheckRecipient(policy.Session{}, policy.Address{}, mustAddr(t, "a@example.org", false)); d.Rule != policy.RuleDefault {
		t.Fatalf("rules: [] gave %v", d)
	}
	if w := p.Warnings(); len(w) != 1 || !strings.HasPrefix(w[0], "test.yaml:2: rules is empty") {
		t.Fatalf("warnings %q", w)
	}
}

func TestPatternsIDNAndCase(t *testing.T) {
	p := mustParse(t, "rules:\n  - name: idn\n    recipients: [\"*@bücher.example\", \"Info@XN--BCHER-KVA.example\"]\n    action: reject\n")
	for _, to := range []string{"a@xn--bcher-kva.example", "a@BÜCHER.example"} {
		if d := p.CheckRecipient(policy.Session{}, policy.Address{}, mustAddr(t, to, true)); d.Rule != "idn" {
			t.Errorf("%s: %v", to, d)
		}
	}
}

func TestCheckSender(t *testing.T) {
	p := mustParse(t, `
groups:
  - name: staff
    users: [alice]
  - name: lists
    users: [listserv]
sender_ownership:
  - name: own
    groups: [staff]
    may_send_as: ["{user}@example.org", "{user}+*@example.org"]
  - name: shared
    users: [alice]
    may_send_as: ["info@example.org", "*@*.alice.example"]
  - name: list-bounces
    groups: [lists]
    may_send_as: ["<>", "*@lists.example.org"]
  - name: logins-are-addresses
    users: ["carol@example.net"]
    may_send_as: ["{user}"]
`)
	cases := []struct {
		user, from string
		action     policy.Action
		rule       string
	}{
		{"", "anyone@anywhere.test", policy.Accept, policy.RuleNoOwnership},
		{"", "", policy.Accept, policy.RuleNoOwnership},
		{"alice", "alice@example.org", policy.Accept, "own"},
		{"alice", "ALICE@Example.org", policy.Accept, "own"},
		{"alice", "alice+news@example.org", policy.Accept, "own"},
		{"alice", "info@example.org", policy.Accept, "shared"},
		{"alice", "x@mail.alice.example", policy.Accept, "shared"},
		{"alice", "bob@example.org", policy.Reject, "own"},
		{"alice", "alice@example.org.evil.test", policy.Reject, "own"},
		{"alice", "", policy.Reject, "own"},
		{"alice", "alice%evil.test@example.org", policy.Reject, "own"},
		{"listserv", "", policy.Accept, "list-bounces"},
		{"listserv", "x@lists.example.org", policy.Accept, "list-bounces"},
		{"listserv", "listserv@example.org", policy.Reject, "list-bounces"},
		{"carol@example.net", "carol@EXAMPLE.net", policy.Accept, "logins-are-addresses"},
		{"carol@example.net", "carol@example.org", policy.Reject, "logins-are-addresses"},
		{"dave", "ceo@example.org", policy.Accept, policy.RuleNoOwnership},
	}
	for _, tc := range cases {
		d := p.CheckSender(policy.Session{User: tc.user, TLS: true}, mustAddr(t, tc.from, false))
		if d.Action != tc.action || d.Rule != tc.rule {
			t.Errorf("%s as %q: got %v", tc.user, tc.from, d)
		}
		if d.Action == policy.Reject && d.Reply.String() != "553 5.7.1 Sender address rejected: not owned by user" {
			t.Errorf("reply %v", d.Reply)
		}
	}
}

func TestLimits(t *testing.T) {
	p := mustParse(t, `
groups:
  - name: students
    users: [carol]
limits:
  - name: everyone
    max_recipients: 100
    max_message_size: 25M
  - name: students
    groups: [students]
    max_recipients: 5
  - name: mx
    listeners: [mx]
    max_message_size: 10K
`)
	carol := policy.Session{User: "carol", Listener: "submission"}
	alice := policy.Session{User: "alice", Listener: "submission"}
	mx := policy.Session{Listener: "mx"}
	if d := p.CheckRecipientCount(carol, 4); d.Action != policy.Accept {
		t.Errorf("5th recipient: %v", d)
	}
	d := p.CheckRecipientCount(carol, 5)
	if d.Action != policy.TempFail || d.Rule != "students" || d.Reply.String() != "452 4.5.3 Too many recipients, at most 5 per message" || d.Source != "test.yaml:9" {
		t.Errorf("6th recipient: %v", d)
	}
	if d := p.CheckRecipientCount(alice, 99); d.Action != policy.Accept {
		t.Errorf("alice 100th: %v", d)
	}
	if d := p.CheckRecipientCount(alice, 100); d.Rule != "everyone" {
		t.Errorf("alice 101st: %v", d)
	}
	if d := p.CheckMessageSize(mx, 10*1024+1); d.Action != policy.Reject || d.Reply.String() != "552 5.3.4 Message too large, at most 10240 bytes" || d.Rule != "mx" {
		t.Errorf("mx size: %v", d)
	}
	if d := p.CheckMessageSize(alice, 10*1024+1); d.Action != policy.Accept {
		t.Errorf("alice size: %v", d)
	}
	if d := p.CheckMessageSize(mx, 0); d.Action != policy.Accept {
		t.Errorf("no SIZE: %v", d)
	}
	if l := p.SessionLimits(mx); l.MaxRecipients != 100 || l.MaxMessageBytes != 10240 {
		t.Errorf("mx limits %+v", l)
	}
	// CheckMail: ownership first, then the declared size.
	if d := p.CheckMail(mx, policy.Address{}, 1<<20); d.Reply.Code != 552 {
		t.Errorf("CheckMail: %v", d)
	}
}

// Explain tells the same story as Evaluate for every envelope: its deciding
// step is the decision's rule, and the rules before it did not match.
func TestExplainAgreesWithEvaluate(t *testing.T) {
	p := mustParse(t, rulesPolicy+`
sender_ownership:
  - name: own
    groups: [staff]
    may_send_as: ["{user}@example.org"]
limits:
  - name: few
    users: [carol]
    max_recipients: 2
`)
	ips := []string{"203.0.113.5", "198.51.100.9", "192.0.2.1", "2001:db8::1"}
	users := []string{"", "alice", "carol"}
	froms := []string{"", "alice@example.org", "x@spam.test", "bob@example.org"}
	tos := []string{"a@example.org", "a@partner.test", "x@foreign.test", "a%b@example.org"}
	n := 0
	for _, ip := range ips {
		for _, u := range users {
			for _, tls := range []bool{false, true} {
				for _, l := range []string{"mx", "submission"} {
					for _, f := range froms {
						for _, to := range tos {
							for _, prior := range []int{0, 2} {
								s := policy.Session{Listener: l, TLS: tls, User: u, ClientIP: netip.MustParseAddr(ip)}
								env := policy.Envelope{From: mustAddr(t, f, false), Recipients: prior}
								rcpt := mustAddr(t, to, false)
								x := p.Explain(s, env, rcpt)
								if !reflect.DeepEqual(x.Decision, p.Evaluate(s, env, rcpt)) {
									t.Fatalf("Explain and Evaluate differ")
								}
								decided := 0
								for _, st := range x.Steps {
									if st.Decided {
										decided++
										if st.Rule != x.Decision.Rule || st.Source != x.Decision.Source {
											t.Fatalf("%+v %+v: decided step %+v, decision %v", s, env, st, x.Decision)
										}
									}
								}
								if decided != 1 {
									t.Fatalf("%+v %v -> %s: %d deciding steps in %+v", s, f, to, decided, x.Steps)
								}
								n++
							}
						}
					}
				}
			}
		}
	}
	t.Logf("%d envelopes", n)
}

func TestExplainSaysWhy(t *testing.T) {
	p := mustParse(t, rulesPolicy)
	s := policy.Session{Listener: "mx", ClientIP: netip.MustParseAddr("203.0.113.5")}
	x := p.Explain(s, policy.Envelope{From: mustAddr(t, "x@foreign.test", false)}, mustAddr(t, "a@foreign.test", false))
	var b strings.Builder
	for _, st := range x.Steps {
		fmt.Fprintf(&b, "%s %s %s %v %s\n", st.Stage, st.Rule, st.Source, st.Decided, st.Note)
	}
	for _, want := range []string{
		"rcpt block test.yaml:8 false sender <x@foreign.test> matches none of senders [*@spam.test, *@*.spam.test, bounce-*@bulk.test]",
		`rcpt greylist test.yaml:12 false listener "mx" is not one of [submission]`,
		"rcpt local test.yaml:16 false recipient <a@foreign.test> is not in local_domains",
		"rcpt partner test.yaml:19 false client IP 203.0.113.5 is not in networks [198.51.100.0/24, 2001:db8::/32]",
		"rcpt plaintext test.yaml:23 true matched: reject -> 530 5.7.0 Must issue a STARTTLS command first",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("explanation lacks %q:\n%s", want, b.String())
		}
	}
}

func TestParseReply(t *testing.T) {
	r, err := policy.ParseReply("451 4.3.2 Please  wait ")
	if err != nil || r.String() != "451 4.3.2 Please  wait" {
		t.Fatalf("%v %v", r, err)
	}
	for _, bad := range []string{"", "550", "550 5.7.1", "250 2.0.0 ok", "55 5.7.1 x", "550 5.7 x", "550 5.x.1 x", "650 6.0.0 x", "550 5.7.1 " + strings.Repeat("x", 201)} {
		if _, err := policy.ParseReply(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// BenchmarkEvaluate1000Rules decides recipients against 1,000 rules and
// 10,000 local domains; the recipient falls through most rules.
func BenchmarkEvaluate1000Rules(b *testing.B) {
	var src strings.Builder
	src.WriteString("local_domains:\n")
	for i := range 5000 {
		fmt.Fprintf(&src, "  - d%d.example\n  - \"*.w%d.example\"\n", i, i)
	}
	src.WriteString("trusted_networks: [10.0.0.0/8]\ngroups:\n  - name: staff\n    users: [alice, bob]\nrules:\n")
	for i := range 996 {
		switch i % 4 {
		case 0:
			fmt.Fprintf(&src, "  - name: r%d\n    senders: [\"*@s%d.test\", \"x%d-*@bulk.test\"]\n    action: reject\n", i, i, i)
		case 1:
			fmt.Fprintf(&src, "  - name: r%d\n    recipients: [\"*@*.p%d.test\", \"ceo@p%d.test\"]\n    networks: [198.51.%d.0/24]\n    action: accept\n", i, i, i, i%256)
		case 2:
			fmt.Fprintf(&src, "  - name: r%d\n    listeners: [l%d]\n    action: tempfail\n", i, i)
		case 3:
			fmt.Fprintf(&src, "  - name: r%d\n    users: [u%d]\n    tls: true\n    action: accept\n", i, i)
		}
	}
	src.WriteString("  - name: local\n    local_recipient: true\n    action: accept\n  - name: staff\n    groups: [staff]\n    action: accept\n  - name: plain\n    tls: false\n    action: reject\n  - name: rest\n    action: require_auth\n")
	p := mustParse(b, src.String())
	if n := len(p.Rules()); n != 1000 {
		b.Fatalf("%d rules", n)
	}
	rcpts := []policy.Address{
		mustAddr(b, "user@d4999.example", false),
		mustAddr(b, "user@a.b.c.w2500.example", false),
		mustAddr(b, "User@x.y.z.foreign.test", false),
		mustAddr(b, "user%foreign.test@d1.example", false),
	}
	s := policy.Session{Listener: "submission", TLS: true, User: "alice", ClientIP: netip.MustParseAddr("203.0.113.9")}
	env := policy.Envelope{From: mustAddr(b, "Alice@example.org", false)}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p.Evaluate(s, env, rcpts[i%len(rcpts)])
	}
}

func TestPatternMatching(t *testing.T) {
	cases := []struct {
		pattern string
		match   []string
		nomatch []string
	}{
		{"*@example.org", []string{"a@example.org", "A.B+c@EXAMPLE.ORG"}, []string{"a@sub.example.org", "a@example.org.evil.test", "a@xexample.org", ""}},
		{"*@*.example.org", []string{"a@sub.example.org", "a@b.c.example.org"}, []string{"a@example.org", "a@subexample.org"}},
		{"*@*", []string{"a@b.test", "a@[192.0.2.1]", "a%b@c.test"}, []string{""}},
		{"<>", []string{""}, []string{"a@b.test"}},
		{"alice@example.org", []string{"alice@example.org", "ALICE@example.org"}, []string{"alice2@example.org", "bob@example.org"}},
		{"bounce-*@bulk.test", []string{"bounce-@bulk.test", "bounce-1-2@bulk.test", "BOUNCE-x@bulk.test"}, []string{"bounce@bulk.test", "xbounce-1@bulk.test"}},
		{"*-list@x.test", []string{"a-list@x.test", "-list@x.test"}, []string{"a-list2@x.test"}},
		{"a*b*c@x.test", []string{"abc@x.test", "a1b2c@x.test", "abcbc@x.test", "aXbYbZc@x.test"}, []string{"ab@x.test", "acb@x.test", "abcd@x.test"}},
		{"*@*.zip", []string{"a@deals.zip"}, []string{"a@zip"}},
	}
	for _, tc := range cases {
		p, err := policy.Parse("t.yaml", []byte(fmt.Sprintf("rules:\n  - name: r\n    senders: [%q]\n    action: reject\n", tc.pattern)))
		if err != nil {
			t.Fatalf("%s: %v", tc.pattern, err)
		}
		for _, list := range []struct {
			addrs []string
			want  bool
		}{{tc.match, true}, {tc.nomatch, false}} {
			for _, a := range list.addrs {
				d := p.CheckRecipient(policy.Session{}, mustAddr(t, a, false), mustAddr(t, "x@y.test", false))
				if got := d.Rule == "r"; got != list.want {
					t.Errorf("%s vs <%s>: matched %v, want %v", tc.pattern, a, got, list.want)
				}
			}
		}
	}
}

func TestAllowOpenRelay(t *testing.T) {
	p := mustParse(t, "allow_open_relay: true\ntrusted_networks: [0.0.0.0/0]\nrules:\n  - name: lab\n    action: accept\n")
	if !p.AllowOpenRelay() || len(p.Warnings()) != 1 || !strings.Contains(p.Warnings()[0], "test.yaml:1: allow_open_relay is true") {
		t.Fatalf("AllowOpenRelay %v, warnings %q", p.AllowOpenRelay(), p.Warnings())
	}
	if d := p.CheckRecipient(policy.Session{}, policy.Address{}, mustAddr(t, "a@foreign.test", false)); d.Action != policy.Accept {
		t.Fatalf("lab policy: %v", d)
	}
	if mustParse(t, "local_domains: [a.example]\n").AllowOpenRelay() {
		t.Fatal("allow_open_relay defaults to true")
	}
}
