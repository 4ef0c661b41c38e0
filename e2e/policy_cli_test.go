package e2e

// The "tlsguard policy" commands, run as an operator runs them: the real
// binary on real files.

import (
	"bytes"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// runGuardCmd runs the tlsguard binary with args and returns its exit code,
// stdout and stderr.
func runGuardCmd(t testing.TB, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(tlsguardBinary(t), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("tlsguard %v: %v", args, err)
	}
	t.Logf("$ tlsguard %s  (exit %d)\n%s%s", strings.Join(args, " "), cmd.ProcessState.ExitCode(), out.String(), errb.String())
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// shippedPolicyFiles lists ../policies/*.yaml without the cases files.
func shippedPolicyFiles(t testing.TB) []string {
	t.Helper()
	all, _ := filepath.Glob(filepath.Join("..", "policies", "*.yaml"))
	var ps []string
	for _, p := range all {
		if !strings.HasSuffix(p, ".cases.yaml") {
			ps = append(ps, p)
		}
	}
	if len(ps) < 4 {
		t.Fatalf("only %d shipped policies", len(ps))
	}
	return ps
}

func TestPolicyCheckCommand(t *testing.T) {
	t.Parallel()
	code, out, _ := runGuardCmd(t, append([]string{"policy", "check"}, shippedPolicyFiles(t)...)...)
	if code != 0 || strings.Count(out, ": ok (") != len(shippedPolicyFiles(t)) {
		t.Fatalf("shipped policies: exit %d", code)
	}

	dir := t.TempDir()
	bad := filepath.Join(dir, "policy.yaml")
	writeFile(t, bad, `local_domains:
  - example.org
  - *.example.org
trusted_networks: [10.1.2.3/8]
rules:
  - name: relay
    action: accept
`)
	code, out, errOut := runGuardCmd(t, "policy", "check", bad)
	if code != 1 || out != "" {
		t.Fatalf("bad file: exit %d, stdout %q", code, out)
	}
	for _, want := range []string{
		bad + ":3: invalid YAML",
		"(a wildcard domain must be quoted",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}
	// Fix the YAML syntax: now every remaining problem is listed at once.
	writeFile(t, bad, `local_domains:
  - example.org
  - "*.example.org"
trusted_networks: [10.1.2.3/8]
rules:
  - name: relay
    action: accept
  - name: relay
    recipients: ["^.*@partner\\.test$"]
    action: accept
`)
	code, _, errOut = runGuardCmd(t, "policy", "check", bad)
	for _, want := range []string{
		bad + `:4: trusted_networks[0]: "10.1.2.3/8" has host bits set; did you mean 10.0.0.0/8?`,
		bad + ":7: rules[0].action: this rule accepts any recipient from any client: an open relay",
		bad + `:8: rules[1].name: duplicate name "relay" (already used by rules[0] on line 6)`,
		bad + `:9: rules[1].recipients[0]: "^.*@partner\\.test$": regular expressions are not supported`,
	} {
		if code != 1 || !strings.Contains(errOut, want) {
			t.Errorf("exit %d; stderr lacks %q", code, want)
		}
	}
}

// The replies a client sees read like a mail server's (RFC 5321 4.1.1.1:
// the EHLO reply opens with the server's own name; RFC 3463 3.2, 3.3: the
// MAIL and RCPT codes), and `policy explain` prints exactly the RCPT reply
// the client gets for the same session.
func TestPolicyExplainReplyIsTheWireReply(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.MX)
	if r := c.ehlo("client.example.net"); r.lines[0] != "mail.example.org" {
		t.Errorf("EHLO reply opens with %q, want the hostname mail.example.org", r.lines[0])
	}
	if got := c.cmd("MAIL FROM:<" + carol + ">").last(); got != "250 2.1.0 Ok" {
		t.Errorf("MAIL reply %q, want %q", got, "250 2.1.0 Ok")
	}
	rcpt := c.cmd("RCPT TO:<" + alice + ">").last()
	if rcpt != "250 2.1.5 Ok" {
		t.Errorf("RCPT reply %q, want %q", rcpt, "250 2.1.5 Ok")
	}
	if got := c.cmd("QUIT").last(); got != "221 2.0.0 Bye" {
		t.Errorf("QUIT reply %q, want %q", got, "221 2.0.0 Bye")
	}

	code, out, errOut := runGuardCmd(t, "policy", "explain", "--policy", filepath.Join(g.Dir, "policy.yaml"),
		"--from", carol, "--to", alice, "--listener", "mx", "--ip", "127.0.0.1")
	if code != 0 {
		t.Fatalf("policy explain: exit %d: %s", code, errOut)
	}
	if !strings.Contains(out, "\nreply:    "+rcpt+"\n") {
		t.Errorf("policy explain does not print the client's reply %q:\n%s", rcpt, out)
	}
}

func TestPolicyExplainCommand(t *testing.T) {
	t.Parallel()
	pol := filepath.Join("..", "policies", "university.yaml")
	code, out, _ := runGuardCmd(t, "policy", "explain", "--policy", pol,
		"--from", "dave@uni.example", "--to", "friend@example.net",
		"--user", "dave", "--tls", "--ip", "198.51.100.7", "--listener", "submission")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	lines := map[string]string{}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			lines[k] = strings.TrimSpace(v)
		}
	}
	if lines["decision"] != "accept" || lines["reply"] != "250 2.1.5 Ok" || !strings.HasPrefix(lines["rule"], "relay-needs-login ("+pol+":") {
		t.Errorf("decision lines: %q", lines)
	}
	for _, want := range []string{
		"no match client IP 198.51.100.7 is not in trusted_networks",
		"no match needs tls: false; the session is encrypted",
		"DECIDED matched: require_auth (the client is logged in as dave) -> 250 2.1.5 Ok",
		"ok sender <dave@uni.example> is allowed by may_send_as",
	} {
		if !containsWords(out, want) {
			t.Errorf("explain output lacks %q", want)
		}
	}

	// Refused: the reply, the rule and its line are the ones a client sees.
	code, out, _ = runGuardCmd(t, "policy", "explain", "--policy", pol,
		"--from", "promo@spam.example", "--to", "alice@uni.example", "--ip", "198.51.100.7", "--listener", "mx")
	if code != 0 || !strings.Contains(out, "reply:    550 5.7.1 Mail from your domain is not accepted here; contact postmaster@uni.example") ||
		!strings.Contains(out, "rule:     blocked-senders ("+pol+":") {
		t.Errorf("exit %d", code)
	}
	if code, _, _ := runGuardCmd(t, "policy", "explain", "--policy", pol, "--to", "a@b.example"); code != 2 {
		t.Errorf("without --from: exit %d, want 2", code)
	}
}

// Every shipped policy passes its cases file, through the binary.
func TestPolicyTestCommandOnShippedPolicies(t *testing.T) {
	t.Parallel()
	for _, p := range shippedPolicyFiles(t) {
		cases := strings.TrimSuffix(p, ".yaml") + ".cases.yaml"
		code, out, errOut := runGuardCmd(t, "policy", "test", p, cases)
		if code != 0 || !strings.Contains(out, " passed, 0 failed") || errOut != "" {
			t.Errorf("%s: exit %d", p, code)
		}
	}
	// A failing case prints a diff and exits 1.
	cases := filepath.Join(t.TempDir(), "cases.yaml")
	writeFile(t, cases, "cases:\n  - name: loopback may relay\n    ip: 127.0.0.1\n    from: app@example.org\n    to: carol@foreign.test\n    expect: accept\n")
	code, out, _ := runGuardCmd(t, "policy", "test", filepath.Join("..", "policies", "default.yaml"), cases)
	if code != 1 || !strings.Contains(out, "FAIL  loopback may relay ("+cases+":2)") ||
		!strings.Contains(out, "- expect: accept") || !strings.Contains(out, "+ expect: reject") {
		t.Errorf("failing case: exit %d", code)
	}
}

// containsWords reports whether a line of out holds words in this order,
// ignoring how many spaces separate them (explain aligns columns).
func containsWords(out, words string) bool {
	want := strings.Join(strings.Fields(words), " ")
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(strings.Join(strings.Fields(l), " "), want) {
			return true
		}
	}
	return false
}

// `policy check` refuses a policy that serve would refuse to start with: one
// whose trusted networks let an outside address relay, even though every key
// in it is valid on its own.
func TestPolicyCheckRefusesOpenRelay(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	open := filepath.Join(dir, "open.yaml")
	writeFile(t, open, "local_domains: [example.org]\ntrusted_networks: [\"203.0.0.0/8\"]\n")
	code, out, errOut := runGuardCmd(t, "policy", "check", open)
	if code != 1 || strings.Contains(out, ": ok") {
		t.Fatalf("open relay policy: exit %d, stdout %q", code, out)
	}
	if want := open + ": open relay: the policy lets an unauthenticated client at 203.0.113.7"; !strings.Contains(errOut, want) {
		t.Errorf("stderr lacks %q:\n%s", want, errOut)
	}
}

// Three quarters of IPv4, trusted in three pieces that all miss the
// documentation address, is refused by the self-test (one probe per public
// /8), and each piece is named in a warning.
func TestPolicyCheckRefusesBroadTrust(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	wide := filepath.Join(dir, "wide.yaml")
	writeFile(t, wide, "local_domains: [example.org]\ntrusted_networks: [0.0.0.0/1, 128.0.0.0/2, 192.0.0.0/8]\n")
	code, out, errOut := runGuardCmd(t, "policy", "check", wide)
	if code != 1 || strings.Contains(out, ": ok") {
		t.Fatalf("three quarters of IPv4 trusted: exit %d, stdout %q", code, out)
	}
	if want := wide + ": open relay: the policy lets an unauthenticated client at "; !strings.Contains(errOut, want) {
		t.Errorf("stderr lacks the self-test's refusal %q:\n%s", want, errOut)
	}
	for i, n := range []string{"0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/8"} {
		if want := fmt.Sprintf("warning: %s:2: trusted_networks[%d]: %s is broader than a /16 of public addresses", wide, i, n); !strings.Contains(errOut, want) {
			t.Errorf("stderr lacks %q", want)
		}
	}

	// Broad but missed by every probe: accepted, with the loud warning.
	broad := filepath.Join(dir, "broad.yaml")
	writeFile(t, broad, "local_domains: [example.org]\ntrusted_networks: [\"85.0.0.0/15\", \"2a01::/24\", 10.0.0.0/8]\n")
	code, out, _ = runGuardCmd(t, "policy", "check", broad)
	if code != 0 || !strings.Contains(out, ": ok") {
		t.Fatalf("broad policy: exit %d", code)
	}
	for _, want := range []string{"85.0.0.0/15 is broader than a /16", "2a01::/24 is broader than a /32"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
	if strings.Contains(out, "10.0.0.0/8 is broader") {
		t.Error("a private range was warned about as public")
	}
}

// --help is a request, not a mistake: exit 0 for every command, and a
// subcommand's help is its own.
func TestCLIHelp(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--help"}, {"serve", "--help"}, {"healthcheck", "--help"}, {"audit", "--help"}, {"version", "--help"},
		{"policy", "--help"}, {"policy", "check", "--help"}, {"policy", "explain", "--help"}, {"policy", "test", "--help"},
	} {
		code, out, errOut := runGuardCmd(t, args...)
		if code != 0 {
			t.Errorf("tlsguard %s: exit %d", strings.Join(args, " "), code)
		}
		if len(args) == 3 && args[0] == "policy" {
			all := out + errOut
			for _, sub := range []string{"check", "explain", "test"} {
				if got := strings.Contains(all, "tlsguard policy "+sub); got != (sub == args[1]) {
					t.Errorf("tlsguard policy %s --help: mentions \"tlsguard policy %s\": %v", args[1], sub, got)
				}
			}
		}
	}
}

// `policy check policies/*.yaml`, as a shell expands it, also names the
// cases files: they are skipped with a pointer to `policy test`.
func TestPolicyCheckSkipsCasesFiles(t *testing.T) {
	t.Parallel()
	all, _ := filepath.Glob(filepath.Join("..", "policies", "*.yaml"))
	code, out, errOut := runGuardCmd(t, append([]string{"policy", "check"}, all...)...)
	if code != 0 {
		t.Fatalf("policy check policies/*.yaml: exit %d\n%s", code, errOut)
	}
	cases := filepath.Join("..", "policies", "default.cases.yaml")
	if want := cases + ": skipped: a test table, not a policy (run it with: tlsguard policy test POLICY " + cases + ")"; !strings.Contains(out, want) {
		t.Errorf("stdout lacks %q", want)
	}
	if n := strings.Count(out, ": ok ("); n != len(shippedPolicyFiles(t)) {
		t.Errorf("%d policies ok, want %d", n, len(shippedPolicyFiles(t)))
	}
}

// serve logs the same warning about a broad trusted network that policy
// check prints.
func TestServeWarnsBroadTrustedNetwork(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withTrustedNetworks("85.0.0.0/15"))
	expectLogLine(t, g, "policy warning", "trusted_networks[0]: 85.0.0.0/15 is broader than a /16 of public addresses")
}
