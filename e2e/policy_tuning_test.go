package e2e

// Tuning a policy in production: replaying the real binary's transaction
// log under candidate policies, and a rule in mode: shadow that watches
// before it bites.

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tlsguard/tlsguard/policy/replay"
)

// universityPolicy is policies/university.yaml for the test backend: its
// domain uni.example becomes example.org (the Postfix mailboxes), and its
// campus network is the loopback address 127.0.0.3.
func universityPolicy(t testing.TB) string {
	t.Helper()
	src := readFile(filepath.Join(repoRoot(t), "policies", "university.yaml"))
	src = strings.ReplaceAll(src, "uni.example", "example.org")
	src = strings.Replace(src, "  - 10.20.0.0/16 ", "  - 127.0.0.3/32 ", 1)
	if !strings.Contains(src, "127.0.0.3/32") {
		t.Fatal("policies/university.yaml: no 10.20.0.0/16 trusted network to replace")
	}
	return src
}

// transact runs one MAIL transaction on c: each RCPT must get its
// expected reply code; DATA follows when any recipient was accepted.
func transact(t testing.TB, c *smtpConn, from string, rcpts map[string]int, order ...string) {
	t.Helper()
	c.cmd("MAIL FROM:<"+from+">").expect(t, 250)
	ok := false
	for _, to := range order {
		c.cmd("RCPT TO:<"+to+">").expect(t, rcpts[to])
		ok = ok || rcpts[to] == 250
	}
	if ok {
		c.cmd("DATA").expect(t, 354)
		c.cmd("Subject: replay\r\n\r\nhello\r\n.").expect(t, 250)
	}
	c.cmd("QUIT")
}

// runReplay runs "tlsguard policy replay --json" and returns the report
// and the exit status.
func runReplay(t testing.TB, stdin []byte, args ...string) (replay.Report, int, string) {
	t.Helper()
	cmd := exec.Command(tlsguardBinary(t), append([]string{"policy", "replay", "--json"}, args...)...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var rep replay.Report
	if code != 2 {
		if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
			t.Fatalf("replay output: %v\n%s\n%s", err, out.String(), errb.String())
		}
	}
	return rep, code, errb.String()
}

func groupCounts(gs []replay.Group, key func(replay.Group) string) map[string]int64 {
	m := map[string]int64{}
	for _, g := range gs {
		m[g.Outcome+" "+key(g)] = g.Count
	}
	return m
}

// Replay: mixed real traffic through tlsguard with the university policy
// in front of Postfix, then its log replayed against three candidates.
func TestPolicyReplayRealLog(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)
	pol := universityPolicy(t)
	installPolicy(t, g, pol)
	cfg := g.PKI.clientTLS()
	n := policyLogCount(g, "transaction")

	// A: the internet to local mailboxes on the MX listener, and a relay
	// attempt there (no TLS: relay-needs-tls).
	c := dialSMTP(t, g.MX)
	c.ehlo("mx.foreign.test")
	transact(t, c, "someone@foreign.test", map[string]int{alice: 250, bob: 250, carol: 530}, alice, bob, carol)
	// B: a campus machine (127.0.0.3, trusted) relays without login.
	c = dialSMTPFrom(t, "127.0.0.3", g.MX)
	c.ehlo("printer.example.org")
	transact(t, c, "printer@example.org", map[string]int{carol: 250, dave: 250}, carol, dave)
	// C: alice logs in on submission after STARTTLS and relays.
	c = dialSMTP(t, g.Submission)
	c.ehlo("laptop")
	c.startTLS(cfg)
	c.ehlo("laptop")
	c.authPlain("", aliceUser, alicePass).expect(t, 235)
	transact(t, c, alice, map[string]int{carol: 250, bob: 250}, carol, bob)
	// D: implicit TLS without login: relaying refused, local accepted.
	c = dialImplicitTLS(t, g.Submissions, cfg)
	c.ehlo("stranger")
	transact(t, c, "x@foreign.test", map[string]int{dave: 550, victim: 250}, dave, victim)
	// E: a blocked sender.
	c = dialSMTP(t, g.MX)
	c.ehlo("spam")
	transact(t, c, "promo@spam.example", map[string]int{alice: 550}, alice)
	// F: the campus network over STARTTLS without login.
	c = dialSMTPFrom(t, "127.0.0.3", g.Submission)
	c.ehlo("lab")
	c.startTLS(cfg)
	c.ehlo("lab")
	transact(t, c, "lab@example.org", map[string]int{dave: 250}, dave)
	// G: bob logs in over implicit TLS.
	c = dialImplicitTLS(t, g.Submissions, cfg)
	c.ehlo("bob")
	c.authPlain("", bobUser, bobPass).expect(t, 235)
	transact(t, c, bob, map[string]int{carol: 250}, carol)
	// H: a partner's newsletter to three local mailboxes.
	c = dialSMTP(t, g.MX)
	c.ehlo("mail.partner.test")
	transact(t, c, "news@partner.test", map[string]int{alice: 250, bob: 250, victim: 250}, alice, bob, victim)
	waitPolicyLog(t, g, "transaction", n+7, guardStartTimeout)
	pf.WaitMessages(t, dave, 2)

	logFile := filepath.Join(t.TempDir(), "tlsguard.log")
	var logb bytes.Buffer
	for _, line := range strings.Split(readFile(g.LogFile), "\n") {
		if strings.Contains(line, `"msg":"transaction"`) || strings.Contains(line, `"msg":"session"`) {
			logb.WriteString(line + "\n")
		}
	}
	writeFile(t, logFile, logb.String())
	dir := t.TempDir()
	candidate := func(name, src string) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, src)
		return p
	}

	// 1. The same policy: every decision unchanged, exit 0.
	rep, code, stderr := runReplay(t, nil, "--policy", candidate("identical.yaml", pol), logFile)
	if code != 0 || rep.Transactions != 8 || rep.Decisions != 15 || rep.Outcomes[replay.Unchanged] != 15 || rep.Changed() || rep.BadLines != 0 {
		t.Errorf("identical: exit %d, %+v %s", code, rep, stderr)
	}
	if rep.Rules[0].Rule != "blocked-senders" || rep.Rules[0].Reject != 1 {
		t.Errorf("identical: per-rule counts %+v", rep.Rules)
	}

	// 2. The campus network is no longer trusted: B's two and F's one
	// recipient are newly refused, each by the rule that now catches them.
	untrusted := strings.Replace(pol, "  - 127.0.0.3/32 ", "  - 10.20.0.0/16 ", 1)
	rep, code, stderr = runReplay(t, nil, "--policy", candidate("untrusted.yaml", untrusted), logFile)
	if code != 1 || rep.Outcomes[replay.NewlyRefused] != 3 || rep.Outcomes[replay.Unchanged] != 12 || rep.Outcomes[replay.NewlyAccepted] != 0 {
		t.Errorf("untrusted: exit %d, outcomes %v %s", code, rep.Outcomes, stderr)
	}
	byRule := groupCounts(rep.ByRule, func(g replay.Group) string { return g.Rule })
	if want := map[string]int64{"newly_refused campus-relay -> relay-needs-tls": 2, "newly_refused campus-relay -> relay-needs-login": 1}; fmt.Sprint(byRule) != fmt.Sprint(want) {
		t.Errorf("untrusted by rule: %v, want %v", byRule, want)
	}
	byEnv := groupCounts(rep.ByEnvelope, func(g replay.Group) string {
		return strings.Join([]string{g.Listener, g.Who, g.SenderDomain, g.RecipientDomain}, " ")
	})
	if want := map[string]int64{"newly_refused mx net 127.0.0.0/24 example.org foreign.test": 2, "newly_refused submission net 127.0.0.0/24 example.org foreign.test": 1}; fmt.Sprint(byEnv) != fmt.Sprint(want) {
		t.Errorf("untrusted by envelope: %v, want %v", byEnv, want)
	}
	// Newest first: F was sent after B.
	if len(rep.ByEnvelope) == 2 && (rep.ByEnvelope[0].Listener != "submission" || rep.ByEnvelope[0].Example.ClientIP != "127.0.0.3" || rep.ByEnvelope[0].Example.Rcpt != dave) {
		t.Errorf("untrusted: newest group first: %+v", rep.ByEnvelope)
	}

	// 3. A sender domain blocked: H's three recipients newly refused.
	blocked := strings.Replace(pol, `senders: ["*@spam.example", "*@*.spam.example"]`, `senders: ["*@spam.example", "*@*.spam.example", "*@partner.test"]`, 1)
	if blocked == pol {
		t.Fatal("no blocked-senders line to extend")
	}
	rep, code, _ = runReplay(t, nil, "--policy", candidate("blocked.yaml", blocked), logFile)
	byEnv = groupCounts(rep.ByEnvelope, func(g replay.Group) string {
		return strings.Join([]string{g.Listener, g.Who, g.SenderDomain, g.RecipientDomain}, " ")
	})
	if code != 1 || rep.Outcomes[replay.NewlyRefused] != 3 || rep.Outcomes[replay.Unchanged] != 12 ||
		fmt.Sprint(byEnv) != fmt.Sprint(map[string]int64{"newly_refused mx net 127.0.0.0/24 partner.test example.org": 3}) {
		t.Errorf("blocked: exit %d, outcomes %v, groups %v", code, rep.Outcomes, byEnv)
	}
	if len(rep.ByRule) != 1 || rep.ByRule[0].Rule != "local-mail -> blocked-senders" || rep.ByRule[0].Example.From != "news@partner.test" {
		t.Errorf("blocked by rule: %+v", rep.ByRule)
	}

	// A truncated and a garbage line, gzip, on stdin: reported with
	// file:line, never fatal; the same counts as from the file.
	lines := strings.Split(strings.TrimSpace(logb.String()), "\n")
	broken := logb.String() + lines[len(lines)-1][:40] + "\nthis is not a log line\n"
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(broken))
	zw.Close()
	rep, code, _ = runReplay(t, gz.Bytes(), "--policy", candidate("blocked.yaml", blocked), "-")
	n = len(lines)
	if code != 1 || rep.Outcomes[replay.NewlyRefused] != 3 || rep.BadLines != 2 || len(rep.BadLinesSeen) != 2 ||
		rep.BadLinesSeen[0].Where != fmt.Sprintf("-:%d", n+1) || rep.BadLinesSeen[1].Where != fmt.Sprintf("-:%d", n+2) {
		t.Errorf("broken lines: exit %d, outcomes %v, bad %d %+v", code, rep.Outcomes, rep.BadLines, rep.BadLinesSeen)
	}

	// Bad input: a candidate that does not load, a log that does not exist.
	if _, code, _ := runReplay(t, nil, "--policy", candidate("bad.yaml", "rules: 3\n"), logFile); code != 2 {
		t.Errorf("bad candidate: exit %d, want 2", code)
	}
	if _, code, _ := runReplay(t, nil, "--policy", candidate("identical.yaml", pol), filepath.Join(dir, "missing.log")); code != 2 {
		t.Errorf("missing log: exit %d, want 2", code)
	}
	// The text report names the outcome and the unparsable lines.
	out, _ := exec.Command(tlsguardBinary(t), "policy", "replay", "--policy", candidate("untrusted.yaml", untrusted), logFile).Output()
	for _, want := range []string{"newly refused", "rule campus-relay -> relay-needs-tls", "rate limits: not simulated"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
}

const shadowPolicy = `local_domains: [example.org]
trusted_networks: []
rules:
  - name: block-spam
    senders: ["*@spam.test"]
    action: reject
    reply: "550 5.7.1 Mail from spam.test is refused"
    mode: shadow
  - name: local
    local_recipient: true
    action: accept
  - name: relay
    action: require_auth
`

// Shadow: a rule in mode: shadow that would refuse a sender lets the mail
// through, and the log and the metric say what it would have done; the
// same file without the mode line, by SIGHUP, refuses.
func TestPolicyShadowRule(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	admin := loopbackAddr(t)
	g := startTLSGuard(t, pf, withConfig(fmt.Sprintf("admin:\n  address: %q\n", admin)))
	installPolicy(t, g, shadowPolicy)

	c := dialSMTP(t, g.MX)
	c.ehlo("spam.test")
	transact(t, c, "promo@spam.test", map[string]int{alice: 250}, alice)
	pf.WaitMessages(t, alice, 1)
	expectLogLine(t, g, "transaction", `"from":"promo@spam.test"`, `"shadow":[{"rcpt":"alice@example.org","rule":"block-spam","would":"reject","reply":"550 5.7.1 Mail from spam.test is refused"}]`)
	_, body := httpGet(t, "http://"+admin+"/metrics")
	if v := metricValue(body, "tlsguard_policy_shadow_total", "rule", "block-spam", "would", "reject"); v != 1 {
		t.Errorf("tlsguard_policy_shadow_total{rule=block-spam,would=reject} = %v, want 1", v)
	}
	if v := metricValue(body, "tlsguard_policy_decisions_total", "rule", "local", "action", "accept"); v != 1 {
		t.Errorf("decisions{rule=local} = %v, want 1", v)
	}
	// Mail from elsewhere: the shadow rule does not match, nothing noted.
	c = dialSMTP(t, g.MX)
	c.ehlo("fine.test")
	transact(t, c, "ok@fine.test", map[string]int{bob: 250}, bob)
	expectLogLine(t, g, "transaction", `"from":"ok@fine.test"`)
	for _, line := range strings.Split(readFile(g.LogFile), "\n") {
		if strings.Contains(line, `"from":"ok@fine.test"`) && strings.Contains(line, `"shadow"`) {
			t.Errorf("shadow noted for a sender it does not match: %s", line)
		}
	}

	// Enforcing: remove the mode line, SIGHUP.
	installPolicy(t, g, strings.Replace(shadowPolicy, "    mode: shadow\n", "", 1))
	c = dialSMTP(t, g.MX)
	c.ehlo("spam.test")
	transact(t, c, "promo@spam.test", map[string]int{alice: 550}, alice)
	_, body = httpGet(t, "http://"+admin+"/metrics")
	if v := metricValue(body, "tlsguard_policy_decisions_total", "rule", "block-spam", "action", "reject"); v != 1 {
		t.Errorf("after enforcing: decisions{rule=block-spam,action=reject} = %v, want 1", v)
	}
	if v := metricValue(body, "tlsguard_policy_shadow_total", "rule", "block-spam", "would", "reject"); v != 1 {
		t.Errorf("after enforcing: shadow count moved to %v", v)
	}
}
