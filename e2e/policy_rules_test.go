package e2e

// Policy rules as real clients see them through the real binary and a real
// Postfix: a custom reply, sender ownership, a recipient limit and a rate
// limit.

import (
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// policyLogCount counts the log lines with this message in the whole log
// (g.Log() keeps only its tail).
func policyLogCount(g *TLSGuard, msg string) int {
	return strings.Count(readFile(g.LogFile), `"msg":"`+msg+`"`)
}

// waitPolicyLog waits until the log holds more than n lines with msg.
func waitPolicyLog(t testing.TB, g *TLSGuard, msg string, n int, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for policyLogCount(g, msg) <= n {
		if time.Now().After(deadline) {
			t.Fatalf("no new %q in the log within %v:\n%s", msg, within, g.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// installPolicy replaces the running guard's policy file and reloads it with
// SIGHUP, as an admin does, and waits until it is in force.
func installPolicy(t testing.TB, g *TLSGuard, yaml string) {
	t.Helper()
	n := policyLogCount(g, "policy reloaded")
	writeFile(t, filepath.Join(g.Dir, "policy.yaml"), yaml)
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitPolicyLog(t, g, "policy reloaded", n, 15*time.Second)
}

const rulesE2EPolicy = `local_domains: [example.org]
trusted_networks: []
groups:
  - name: staff
    users: [alice, bob]
rules:
  - name: blocked-senders
    senders: ["*@spam.test"]
    action: reject
    reply: "550 5.7.1 Mail from spam.test is refused by example.org policy"
  - name: local
    local_recipient: true
    action: accept
  - name: staff-relay
    groups: [staff]
    tls: true
    action: accept
sender_ownership:
  - name: own-address
    groups: [staff]
    may_send_as: ["{user}@example.org"]
limits:
  - name: two-per-message
    listeners: [submission]
    max_recipients: 2
rate_limits:
  - name: bob-per-hour
    per: user
    users: [bob]
    window: 1h
    messages: 2
`

func TestPolicyRulesWithRealClients(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)
	installPolicy(t, g, rulesE2EPolicy)

	t.Run("custom reply from a rule", func(t *testing.T) {
		run := runSwaks(t, g.MX, g.PKI, "--tls", "--from", "promo@spam.test", "--to", alice)
		if got, want := run.replyAfter("RCPT TO:<"+alice+">"), "550 5.7.1 Mail from spam.test is refused by example.org policy"; got != want {
			t.Errorf("RCPT reply %q, want %q", got, want)
		}
		py := runPython(t, g.Submission, g.PKI, "--tls", "starttls", "--mail-from", "promo@spam.test", "--rcpt", bob)
		if r := py.step(t, "rcpt"); r.Code != 550 || r.Msg != "5.7.1 Mail from spam.test is refused by example.org policy" {
			t.Errorf("smtplib RCPT %d %q", r.Code, r.Msg)
		}
	})

	t.Run("sender ownership 553 for a logged-in user", func(t *testing.T) {
		run := runSwaks(t, g.Submissions, g.PKI, "--tls-on-connect",
			"--auth", "PLAIN", "--auth-user", aliceUser, "--auth-password", alicePass,
			"--from", bob, "--to", carol)
		if got, want := run.replyAfter("MAIL FROM:<"+bob+">"), "553 5.7.1 Sender address rejected: not owned by user"; got != want {
			t.Errorf("MAIL reply %q, want %q", got, want)
		}
		if run.exit == 0 {
			t.Error("swaks succeeded")
		}
		// Her own address works.
		runSwaks(t, g.Submissions, g.PKI, "--tls-on-connect",
			"--auth", "PLAIN", "--auth-user", aliceUser, "--auth-password", alicePass,
			"--from", alice, "--to", carol, "--header", "Subject: own address").expectOK(t)
		pf.WaitMessages(t, carol, 1)
	})

	t.Run("recipient limit 452 4.5.3", func(t *testing.T) {
		py := runPython(t, g.Submission, g.PKI, "--tls", "starttls", "--user", aliceUser, "--password", alicePass,
			"--mail-from", alice, "--rcpt", dave, "--rcpt", victim, "--rcpt", "postmaster@example.org", "--subject", "three recipients")
		var codes []int
		for _, s := range py {
			if s.Step == "rcpt" {
				codes = append(codes, s.Code)
				if s.Code == 452 && s.Msg != "4.5.3 Too many recipients, at most 2 per message" {
					t.Errorf("452 text %q", s.Msg)
				}
			}
		}
		if len(codes) != 3 || codes[0] != 250 || codes[1] != 250 || codes[2] != 452 {
			t.Fatalf("RCPT codes %v, want 250 250 452", codes)
		}
		if d := py.step(t, "data"); d.Code != 250 {
			t.Fatalf("DATA %d %s", d.Code, d.Msg)
		}
		pf.WaitMessages(t, dave, 1)
		pf.WaitMessages(t, victim, 1)
		pf.Settle(t)
		pf.ExpectEmpty(t, "postmaster@example.org")
	})

	t.Run("rate limit 450 4.7.1", func(t *testing.T) {
		send := func() swaksRun {
			return runSwaks(t, g.Submissions, g.PKI, "--tls-on-connect",
				"--auth", "PLAIN", "--auth-user", bobUser, "--auth-password", bobPass,
				"--from", bob, "--to", alice, "--header", "Subject: rate")
		}
		send().expectOK(t)
		send().expectOK(t)
		run := send()
		got := run.replyAfter("MAIL FROM:<" + bob + ">")
		if !strings.HasPrefix(got, "450 4.7.1 Rate limit reached: too many messages for user bob (at most 2 per 1h), try again in ") {
			t.Errorf("third message: MAIL reply %q", got)
		}
		// alice is not limited.
		runSwaks(t, g.Submissions, g.PKI, "--tls-on-connect",
			"--auth", "PLAIN", "--auth-user", aliceUser, "--auth-password", alicePass,
			"--from", alice, "--to", bob, "--header", "Subject: not limited").expectOK(t)
		if log := readFile(g.LogFile); !strings.Contains(log, `"rule":"bob-per-hour"`) || !strings.Contains(log, `"msg":"MAIL refused by policy"`) {
			t.Error("the refusal is not logged with its rule")
		}
	})
}
