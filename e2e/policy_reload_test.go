package e2e

// Live reload of the policy under traffic: by SIGHUP and by editing the
// file. A valid new policy decides new transactions without dropping open
// sessions; a broken edit is refused and the old policy keeps working.

import (
	"bufio"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const reloadBase = `local_domains: [example.org]
trusted_networks: []
rules:
  - name: local
    local_recipient: true
    action: accept
`

// closedTo is a policy that refuses relaying to foreign.test with text.
func closedTo(text string) string {
	return reloadBase + `  - name: foreign-closed
    recipients: ["*@foreign.test"]
    action: reject
    reply: "550 5.7.1 ` + text + `"
  - name: logged-in
    authenticated: true
    action: accept
`
}

const openPolicy = reloadBase + `  - name: logged-in
    authenticated: true
    action: accept
`

// deliverLocal runs one plaintext delivery to alice@example.org (accepted
// by every policy in this test) and reports the first unexpected reply.
func deliverLocal(addr string, n int) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	expect := func(send string, code string) error {
		if send != "" {
			if _, err := fmt.Fprintf(c, "%s\r\n", send); err != nil {
				return err
			}
		}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return fmt.Errorf("%q: %v", send, err)
			}
			if len(line) < 4 || !strings.HasPrefix(line, code) {
				return fmt.Errorf("%q: got %q, want %s", send, line, code)
			}
			if line[3] == ' ' {
				return nil
			}
		}
	}
	for _, step := range []struct{ send, code string }{
		{"", "220"}, {"EHLO traffic.example", "250"},
		{"MAIL FROM:<traffic@foreign.test>", "250"}, {"RCPT TO:<" + alice + ">", "250"},
		{"DATA", "354"}, {fmt.Sprintf("Subject: traffic %d\r\n\r\nmessage %d\r\n.", n, n), "250"},
		{"QUIT", "221"},
	} {
		if err := expect(step.send, step.code); err != nil {
			return err
		}
	}
	return nil
}

func TestPolicyLiveReload(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)
	policyFile := filepath.Join(g.Dir, "policy.yaml")
	installPolicy(t, g, openPolicy)

	// Traffic for the whole test: local deliveries, none may fail.
	var sent atomic.Int64
	var trafficErr error
	var errOnce sync.Once
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := deliverLocal(g.Submission, w*100000+i); err != nil {
					errOnce.Do(func() { trafficErr = err })
					return
				}
				sent.Add(1)
				time.Sleep(20 * time.Millisecond)
			}
		})
	}
	defer func() {
		close(stop)
		wg.Wait()
		if trafficErr != nil {
			t.Errorf("traffic during reloads failed: %v", trafficErr)
		}
		n := int(sent.Load())
		t.Logf("%d local deliveries during the reloads", n)
		if n == 0 {
			t.Error("no traffic got through")
		}
		pf.WaitMessages(t, alice, n)
	}()

	// An open session, logged in over STARTTLS, with a transaction under
	// way under the open policy.
	s := dialSMTP(t, g.Submission)
	s.ehlo("client.example.net")
	s.startTLS(g.PKI.clientTLS())
	s.ehlo("client.example.net")
	s.authPlain("", aliceUser, alicePass).expect(t, 235)
	s.cmd("MAIL FROM:<"+alice+">").expect(t, 250)
	s.cmd("RCPT TO:<"+carol+">").expect(t, 250)

	// 1. SIGHUP with a policy that closes foreign.test.
	installPolicy(t, g, closedTo("closed by SIGHUP"))
	// The transaction under way keeps the policy it started with...
	s.cmd("RCPT TO:<"+dave+">").expect(t, 250)
	s.cmd("DATA").expect(t, 354)
	s.send("Subject: started before the reload\r\n\r\nstill delivered\r\n.\r\n")
	s.read().expect(t, 250)
	pf.WaitMessages(t, carol, 1)
	pf.WaitMessages(t, dave, 1)
	// ... and the next one in the same session gets the new policy.
	s.cmd("MAIL FROM:<"+alice+">").expect(t, 250)
	s.cmd("RCPT TO:<"+carol+">").expectPrefix(t, "550 5.7.1 closed by SIGHUP")
	s.cmd("RSET").expect(t, 250)
	// A new client sees it too.
	run := runSwaks(t, g.Submissions, g.PKI, "--tls-on-connect",
		"--auth", "PLAIN", "--auth-user", bobUser, "--auth-password", bobPass, "--from", bob, "--to", dave)
	if got := run.replyAfter("RCPT TO:<" + dave + ">"); got != "550 5.7.1 closed by SIGHUP" {
		t.Errorf("new client after SIGHUP: %q", got)
	}

	// 2. Editing the file, no signal: the watcher reloads it.
	n := policyLogCount(g, "policy reloaded")
	writeFile(t, policyFile, closedTo("closed by editing the file"))
	waitPolicyLog(t, g, "policy reloaded", n, 15*time.Second)
	if !strings.Contains(readFile(g.LogFile), `"trigger":"file change"`) {
		t.Error("the reload was not logged as a file change")
	}
	s.cmd("MAIL FROM:<"+alice+">").expect(t, 250)
	s.cmd("RCPT TO:<"+carol+">").expectPrefix(t, "550 5.7.1 closed by editing the file")
	s.cmd("RSET").expect(t, 250)

	// 3. A broken edit (an unreachable rule) is refused, by the watcher and
	// by SIGHUP, and the policy in force keeps deciding.
	refused := policyLogCount(g, "policy reload refused; the old one stays in force")
	writeFile(t, policyFile, openPolicy+`  - name: unreachable
    users: [alice]
    action: accept
`)
	waitPolicyLog(t, g, "policy reload refused; the old one stays in force", refused, 15*time.Second)
	refused = policyLogCount(g, "policy reload refused; the old one stays in force")
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitPolicyLog(t, g, "policy reload refused; the old one stays in force", refused, 15*time.Second)
	if want := `policy.yaml:10: rules[2].name: rule \"unreachable\" can never match: rule \"logged-in\" on line 7`; !strings.Contains(readFile(g.LogFile), want) {
		t.Errorf("the refusal does not name file, line and key (%s)", want)
	}
	s.cmd("MAIL FROM:<"+alice+">").expect(t, 250)
	s.cmd("RCPT TO:<"+carol+">").expectPrefix(t, "550 5.7.1 closed by editing the file")
	s.cmd("RCPT TO:<"+bob+">").expect(t, 250)
	s.cmd("DATA").expect(t, 354)
	s.send("Subject: after a refused reload\r\n\r\nthe old policy still works\r\n.\r\n")
	s.read().expect(t, 250)
	pf.WaitMessages(t, bob, 1)

	// The session opened before all of this is still alive.
	s.cmd("QUIT").expect(t, 221)
	pf.Settle(t)
	if got := len(pf.Messages(t, carol)); got != 1 {
		t.Errorf("%s got %d messages, want 1 (only the one from before the reload)", carol, got)
	}
}

// TestPolicyWatcherFollowsSIGHUP: after a SIGHUP whose config names another
// policy file, editing that new file reloads it, and editing the old one
// changes nothing.
func TestPolicyWatcherFollowsSIGHUP(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)
	oldFile := filepath.Join(g.Dir, "policy.yaml")
	newFile := filepath.Join(g.Dir, "policy-new.yaml")
	writeFile(t, newFile, closedTo("closed by the new file"))

	n := policyLogCount(g, "policy reloaded")
	cfg := readFile(g.ConfigFile)
	if !strings.Contains(cfg, oldFile) {
		t.Fatalf("the config does not name %s:\n%s", oldFile, cfg)
	}
	writeFile(t, g.ConfigFile, strings.ReplaceAll(cfg, oldFile, newFile))
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitPolicyLog(t, g, "policy reloaded", n, 15*time.Second)
	relayRefused := func(want string) {
		t.Helper()
		s := dialSMTP(t, g.Submission)
		defer s.cmd("QUIT")
		s.ehlo("client.example.net")
		s.startTLS(g.PKI.clientTLS())
		s.ehlo("client.example.net")
		s.authPlain("", aliceUser, alicePass).expect(t, 235)
		s.cmd("MAIL FROM:<"+alice+">").expect(t, 250)
		s.cmd("RCPT TO:<"+carol+">").expectPrefix(t, want)
	}
	relayRefused("550 5.7.1 closed by the new file")

	// The old file no longer decides anything: editing it reloads nothing.
	n = policyLogCount(g, "policy reloaded")
	writeFile(t, oldFile, closedTo("closed by the old file"))
	// The new file does: its edit is picked up by the watcher.
	writeFile(t, newFile, closedTo("closed by editing the new file"))
	waitPolicyLog(t, g, "policy reloaded", n, 15*time.Second)
	relayRefused("550 5.7.1 closed by editing the new file")
	time.Sleep(5 * time.Second) // two watch intervals: a reload of the old file would show now
	if got := policyLogCount(g, "policy reloaded"); got != n+1 {
		t.Errorf("%d policy reloads after editing both files, want 1 (the new file only):\n%s", got-n, g.Log())
	}
	relayRefused("550 5.7.1 closed by editing the new file")
}
