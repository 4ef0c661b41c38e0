package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runCmd runs the CLI in-process and returns exit code, stdout and stderr.
func runCmd(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// shippedPolicies returns policies/*.yaml without the cases files.
func shippedPolicies(t *testing.T) []string {
	t.Helper()
	all, err := filepath.Glob("../../policies/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ps []string
	for _, p := range all {
		if !strings.HasSuffix(p, ".cases.yaml") {
			ps = append(ps, p)
		}
	}
	if len(ps) < 4 {
		t.Fatalf("only %d shipped policies: %v", len(ps), ps)
	}
	return ps
}

// Every policy that ships loads, has a cases file next to it, and passes
// it through "tlsguard policy test".
func TestShippedPoliciesPassTheirCases(t *testing.T) {
	for _, p := range shippedPolicies(t) {
		cases := strings.TrimSuffix(p, ".yaml") + ".cases.yaml"
		if _, err := os.Stat(cases); err != nil {
			t.Errorf("%s has no cases file: %v", p, err)
			continue
		}
		code, out, errOut := runCmd("policy", "test", p, cases)
		if code != 0 || strings.Contains(out, "FAIL") || !strings.Contains(out, ", 0 failed") {
			t.Errorf("policy test %s %s: exit %d\n%s%s", p, cases, code, out, errOut)
		}
	}
}

func TestPolicyCheck(t *testing.T) {
	args := append([]string{"policy", "check"}, shippedPolicies(t)...)
	code, out, errOut := runCmd(args...)
	if code != 0 || errOut != "" || strings.Count(out, ": ok (") != len(args)-2 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}

	bad := writeTemp(t, "bad.yaml", `local_domains: [example.org]
rules:
  - name: all
    action: require_auth
  - name: later
    local_recipient: true
    action: accept
  - name: x
    networks: [10.0.0.1/8]
    action: reject
`)
	good := writeTemp(t, "good.yaml", "local_domains: [example.org]\ngroups:\n  - name: unused\n    users: [a]\n")
	code, out, errOut = runCmd("policy", "check", good, bad)
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	for _, want := range []string{
		bad + `:5: rules[1].name: rule "later" can never match: rule "all" on line 3`,
		bad + `:9: rules[2].networks[0]: "10.0.0.1/8" has host bits set`,
	} {
		if !strings.Contains(errOut, want+"") {
			t.Errorf("stderr lacks %q:\n%s", want, errOut)
		}
	}
	if !strings.Contains(out, good+": ok") || !strings.Contains(out, `warning: `+good+`:3: group "unused" is not used`) {
		t.Errorf("stdout:\n%s", out)
	}

	if code, _, _ := runCmd("policy", "check"); code != 2 {
		t.Errorf("no file: exit %d, want 2", code)
	}
	if code, _, errOut := runCmd("policy", "check", filepath.Join(t.TempDir(), "missing.yaml")); code != 1 || !strings.Contains(errOut, "no such file") {
		t.Errorf("missing file: exit %d %s", code, errOut)
	}
	if code, _, _ := runCmd("policy", "frobnicate"); code != 2 {
		t.Errorf("unknown subcommand: exit %d", code)
	}
	if code, _, errOut := runCmd("policy"); code != 2 || !strings.Contains(errOut, "policy explain") {
		t.Errorf("no subcommand: exit %d %s", code, errOut)
	}
}

func TestPolicyExplain(t *testing.T) {
	const uni = "../../policies/university.yaml"
	code, out, errOut := runCmd("policy", "explain", "--policy", uni, "--from", "carol@uni.example",
		"--to", "friend@example.net", "--ip", "198.51.100.7", "--listener", "submission")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"decision: reject\n",
		"reply:    530 5.7.0 Must issue a STARTTLS command first\n",
		"rule:     relay-needs-tls (" + ruleAt(t, uni, "relay-needs-tls") + ")\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	expectStep(t, out, "RCPT blocked-senders "+ruleAt(t, uni, "blocked-senders")+" no match sender <carol@uni.example> matches none of senders [*@spam.example, *@*.spam.example]")
	expectStep(t, out, "RCPT local-mail "+ruleAt(t, uni, "local-mail")+" no match recipient <friend@example.net> is not in local_domains")
	expectStep(t, out, "RCPT campus-relay "+ruleAt(t, uni, "campus-relay")+" no match client IP 198.51.100.7 is not in trusted_networks")
	expectStep(t, out, "RCPT relay-needs-tls "+ruleAt(t, uni, "relay-needs-tls")+" DECIDED matched: reject -> 530 5.7.0 Must issue a STARTTLS command first")

	// Logged in over TLS, sender not owned: decided at MAIL.
	code, out, _ = runCmd("policy", "explain", "--policy", uni, "--from", "alice@uni.example", "--to", "friend@example.net",
		"--user", "carol", "--tls", "--listener", "submission", "--to", "bob@uni.example")
	if code != 0 || strings.Count(out, "decision: reject") != 2 || !strings.Contains(out, "553 5.7.1 Sender address rejected: not owned by user") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	expectStep(t, out, "MAIL own-address "+ruleAt(t, uni, "own-address")+" DECIDED applies, but sender <alice@uni.example> matches none of may_send_as")

	// The null sender and a recipient limit.
	code, out, _ = runCmd("policy", "explain", "--policy", uni, "--from", "<>", "--to", "x@example.net",
		"--user", "listserv", "--tls", "--prior-recipients", "3")
	if code != 0 || !strings.Contains(out, "decision: accept") || !strings.Contains(out, "MAIL FROM:<> ") {
		t.Errorf("null sender: exit %d:\n%s", code, out)
	}
	code, out, _ = runCmd("policy", "explain", "--policy", uni, "--from", "carol@uni.example", "--to", "x@example.net",
		"--user", "carol", "--tls", "--prior-recipients", "50")
	if code != 0 || !strings.Contains(out, "decision: tempfail") || !strings.Contains(out, "LIMIT  students-per-message") {
		t.Errorf("limit: exit %d:\n%s", code, out)
	}

	for _, args := range [][]string{
		{"--policy", uni, "--to", "a@b.org"},                           // no --from
		{"--policy", uni, "--from", "a@b.org"},                         // no --to
		{"--from", "a@b.org", "--to", "a@b.org"},                       // no --policy
		{"--policy", uni, "--from", "a@b.org", "--to", "a@b.org."},     // bad address
		{"--policy", uni, "--from", "a@b.org", "--to", "<>"},           // null recipient
		{"--policy", uni, "--from", "a@b", "--to", "a@b", "--ip", "x"}, // bad IP
	} {
		if code, _, _ := runCmd(append([]string{"policy", "explain"}, args...)...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	bad := writeTemp(t, "bad.yaml", "rules: {}\n")
	if code, _, errOut := runCmd("policy", "explain", "--policy", bad, "--from", "a@b.org", "--to", "c@d.org"); code != 1 || !strings.Contains(errOut, bad+":1: rules: must be a list") {
		t.Errorf("bad policy: exit %d %s", code, errOut)
	}
}

func TestPolicyTestPrintsDiff(t *testing.T) {
	cases := writeTemp(t, "c.yaml", `cases:
  - name: passes
    from: x@example.net
    to: a@example.org
    expect: accept
  - name: wrong expectation
    from: x@example.net
    to: a@foreign.test
    expect: accept
    rule: local_domains
`)
	code, out, _ := runCmd("policy", "test", "../../policies/default.yaml", cases)
	if code != 1 {
		t.Fatalf("exit %d, want 1\n%s", code, out)
	}
	for _, want := range []string{
		"ok    passes\n",
		"FAIL  wrong expectation (" + cases + ":6)\n",
		"      - expect: accept\n",
		"      + expect: reject\n",
		"      - rule:   local_domains\n",
		"      + rule:   default (../../policies/default.yaml)\n",
		"decided by default (../../policies/default.yaml): 550 5.7.1 Relaying denied. Authentication required.",
		cases + ": 1 passed, 1 failed\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	badCases := writeTemp(t, "bad.cases.yaml", "cases:\n  - name: x\n    from: a@b.org\n    to: c@d.org\n    expect: yes\n")
	if code, _, errOut := runCmd("policy", "test", "../../policies/default.yaml", badCases); code != 1 || !strings.Contains(errOut, badCases+":5: cases[0].expect:") {
		t.Errorf("bad cases: exit %d %s", code, errOut)
	}
	if code, _, _ := runCmd("policy", "test", "../../policies/default.yaml"); code != 2 {
		t.Errorf("one argument: exit %d", code)
	}
}

// ruleAt returns "file:line" of the entry "- name: NAME" in file.
func ruleAt(t *testing.T, file, name string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for i, l := range strings.Split(string(data), "\n") {
		if strings.TrimSpace(l) == "- name: "+name {
			return fmt.Sprintf("%s:%d", file, i+1)
		}
	}
	t.Fatalf("%s has no entry %q", file, name)
	return ""
}

// expectStep fails unless a line of out holds these words in this order
// (explain aligns its columns with spaces).
func expectStep(t *testing.T, out, words string) {
	t.Helper()
	want := strings.Join(strings.Fields(words), " ")
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(strings.Join(strings.Fields(l), " "), want) {
			return
		}
	}
	t.Errorf("no step %q in:\n%s", want, out)
}

// explain shows a rule in mode: shadow as SHADOW with what it would have
// decided, and the decision of the rule after it.
func TestPolicyExplainShadow(t *testing.T) {
	p := writeTemp(t, "shadow.yaml", `local_domains: [example.org]
rules:
  - name: block-spam
    senders: ["*@spam.test"]
    action: reject
    mode: shadow
  - name: local
    local_recipient: true
    action: accept
`)
	code, out, errOut := runCmd("policy", "explain", "--policy", p, "--from", "x@spam.test", "--to", "a@example.org")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		"decision: accept\n",
		"rule:     local (" + p + ":7)\n",
		"shadow:   rule block-spam (" + p + ":3, mode: shadow) would reject: 550 5.7.1 Rejected by policy\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	expectStep(t, out, "RCPT block-spam "+p+":3 SHADOW matched: reject -> 550 5.7.1 Rejected by policy, but mode: shadow: not enforced, the rules below decide")
	expectStep(t, out, "RCPT local "+p+":7 DECIDED matched: accept -> 250 2.1.5 Ok")
}
