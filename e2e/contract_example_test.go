package e2e

// The README's first steps, on the shipped files: tlsguard.yaml as it is
// (only its loopback addresses rewritten to free ports, so that this test
// cannot collide with a backend someone started by hand on 2525 or with
// other tests), the trial backend of e2e/postfix-backend.sh, and the
// README's swaks lines.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// readmeBackend is the Postfix that e2e/postfix-backend.sh starts.
type readmeBackend struct {
	script, base string
}

func startReadmeBackend(t *testing.T, port int) *readmeBackend {
	t.Helper()
	requireTool(t, "postfix")
	if os.Geteuid() != 0 {
		t.Skip("e2e/postfix-backend.sh needs root")
	}
	script, _ := filepath.Abs("postfix-backend.sh")
	// Not tlsguard-postfix-*: that is the harness's, reaped by TestMain.
	parent, err := os.MkdirTemp("", "tlsguard-contract-readme-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	os.Chmod(parent, 0o755)
	b := &readmeBackend{script: script, base: filepath.Join(parent, "backend")}
	out, err := b.run(t, "start", fmt.Sprint(port))
	if err != nil {
		t.Fatalf("postfix-backend.sh start: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		if out, err := b.run(t, "stop"); err != nil {
			t.Errorf("postfix-backend.sh stop: %v\n%s", err, out)
		}
	})
	return b
}

func (b *readmeBackend) run(t *testing.T, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", append([]string{b.script}, args...)...)
	cmd.Env = append(os.Environ(), "TLSGUARD_POSTFIX_DIR="+b.base, "PATH="+os.Getenv("PATH")+":/usr/sbin")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// waitMail waits until `postfix-backend.sh mail` lists a message whose
// headers contain every string in want.
func (b *readmeBackend) waitMail(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, _ := b.run(t, "mail")
		for _, msg := range strings.Split(out, "== ")[1:] {
			if containsAll(msg, want) {
				return
			}
		}
		if time.Now().After(deadline) {
			maillog, _ := os.ReadFile(filepath.Join(b.base, "maillog"))
			t.Fatalf("postfix-backend.sh mail lists no message with %q:\n%s\nmaillog:\n%s", want, out, maillog)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// readmeSwaks runs swaks with exactly the README's arguments (no CA, no
// verification flags of the harness).
func readmeSwaks(t *testing.T, args ...string) swaksRun {
	t.Helper()
	swaks := requireTool(t, "swaks")
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, swaks, args...)
	out, _ := cmd.CombinedOutput()
	t.Logf("swaks %s\n%s", strings.Join(args, " "), out)
	if ctx.Err() != nil {
		t.Fatalf("swaks timed out")
	}
	return swaksRun{out: string(out), exit: cmd.ProcessState.ExitCode()}
}

// startReadmeGuard runs `tlsguard serve --config cfgArg` in cwd, as the
// README does, and waits for the STARTTLS listener.
func startReadmeGuard(t *testing.T, cwd, cfgArg, logFile, waitAddr string) *TLSGuard {
	t.Helper()
	g := &TLSGuard{Dir: cwd, ConfigFile: cfgArg, LogFile: logFile}
	g.cmd, g.exited = runGuard(t, cwd, cfgArg, logFile)
	t.Cleanup(func() {
		g.stop(t)
		if t.Failed() {
			t.Logf("tlsguard log:\n%s", g.Log())
		}
	})
	if err := waitGreeting(waitAddr, g.exited, guardStartTimeout); err != nil {
		t.Fatalf("tlsguard: %v\n%s", err, g.Log())
	}
	return g
}

// README "Two commands" and "Trying it by hand": the shipped tlsguard.yaml
// starts with a generated self-signed certificate kept in ./state next to
// the config, says in its log that the certificate is for trying only, and
// the README's swaks line delivers a first message through STARTTLS to the
// trial backend. Then, as the README goes on: with the auth: section
// uncommented and a users file from htpasswd -B, the README's implicit-TLS
// swaks line relays to carol@foreign.test; without login the same relay
// gets the exact 550; and 2587 offers no AUTH before STARTTLS.
func TestContractShippedExampleConfig(t *testing.T) {
	t.Parallel()
	shipped, err := os.ReadFile(filepath.Join("..", "tlsguard.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	addrs := map[string]string{}
	cfg := string(shipped)
	for _, fixed := range []string{"127.0.0.1:2465", "127.0.0.1:2587", "127.0.0.1:2025", "127.0.0.1:2525"} {
		if n := strings.Count(cfg, `"`+fixed+`"`); n != 1 {
			t.Fatalf("tlsguard.yaml names %q %d times, want once (the README's ports changed?)", fixed, n)
		}
		addrs[fixed] = loopbackAddr(t)
		cfg = strings.Replace(cfg, `"`+fixed+`"`, `"`+addrs[fixed]+`"`, 1)
	}
	writeFile(t, filepath.Join(dir, "tlsguard.yaml"), cfg)
	policy, err := os.ReadFile(filepath.Join("..", "policies", "default.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(dir, "policies"), 0o755)
	writeFile(t, filepath.Join(dir, "policies", "default.yaml"), string(policy))

	_, backendPort, _ := net.SplitHostPort(addrs["127.0.0.1:2525"])
	var port int
	fmt.Sscan(backendPort, &port)
	backend := startReadmeBackend(t, port)

	// 1. go run ./cmd/tlsguard serve --config tlsguard.yaml (the built
	// binary, from the config's folder).
	submission := addrs["127.0.0.1:2587"]
	g := startReadmeGuard(t, dir, "tlsguard.yaml", filepath.Join(t.TempDir(), "first.log"), submission)
	if log := g.Log(); !strings.Contains(log, "SELF-SIGNED CERTIFICATE: for trying only") {
		t.Errorf("no log line saying the self-signed certificate is for trying only:\n%s", log)
	}
	if pem := readFile(filepath.Join(dir, "state", "selfsigned", "cert.pem")); !strings.Contains(pem, "BEGIN CERTIFICATE") {
		t.Errorf("no generated certificate in the state folder next to tlsguard.yaml (state/selfsigned/cert.pem)")
	}

	// swaks --server 127.0.0.1:2587 -tls --from you@example.net --to postmaster@example.org
	readmeSwaks(t, "--server", submission, "-tls", "--from", "you@example.net", "--to", "postmaster@example.org").expectOK(t)
	backend.waitMail(t, "/example.org/postmaster/", "Return-Path: <you@example.net>", "by mail.example.org")

	// "on 2587 AUTH is not even offered before STARTTLS".
	c := dialSMTP(t, submission)
	if line, ok := c.ehlo("client.example.net").extension("AUTH"); ok {
		t.Errorf("2587 offers %q before STARTTLS", line)
	}
	c.cmd("QUIT").expect(t, 221)

	// Uncomment auth:, create the users file, restart.
	g.stop(t)
	for _, line := range []string{"# auth:\n", "#   users_file: users.htpasswd\n"} {
		if strings.Count(cfg, line) != 1 {
			t.Fatalf("tlsguard.yaml has no commented %q to uncomment, as the README says", line)
		}
		cfg = strings.Replace(cfg, line, line[2:], 1) // "# auth:" -> "auth:", "#   users_file" -> "  users_file"
	}
	writeFile(t, filepath.Join(dir, "tlsguard.yaml"), cfg)
	users := writeHtpasswd(t, dir, map[string]string{"alice": "the password"})
	if filepath.Base(users) != "users.htpasswd" {
		t.Fatalf("users file %s", users)
	}
	// This time from another folder: relative paths are the config's.
	g = startReadmeGuard(t, t.TempDir(), filepath.Join(dir, "tlsguard.yaml"), filepath.Join(t.TempDir(), "second.log"), submission)

	// swaks --server 127.0.0.1:2465 --tlsc --auth PLAIN --au alice --ap 'the password' \
	//       --from alice@example.org --to carol@foreign.test
	readmeSwaks(t, "--server", addrs["127.0.0.1:2465"], "--tlsc", "--auth", "PLAIN", "--au", "alice", "--ap", "the password",
		"--from", "alice@example.org", "--to", "carol@foreign.test").expectOK(t)
	backend.waitMail(t, "/foreign.test/carol/", "Return-Path: <alice@example.org>", "ESMTPSA")

	// "Without login the same relay attempt gets 550 5.7.1 ...".
	run := readmeSwaks(t, "--server", submission, "-tls", "--from", "alice@example.org", "--to", "carol@foreign.test")
	if got := run.replyAfter("RCPT TO:<carol@foreign.test>"); got != relayDenied {
		t.Errorf("relay without login: RCPT reply %q, want %q", got, relayDenied)
	}
}

// postfix-backend.sh start refuses a port another process already holds,
// instead of saying the backend listens there.
func TestPostfixBackendScriptRefusesBusyPort(t *testing.T) {
	t.Parallel()
	requireTool(t, "postfix")
	if os.Geteuid() != 0 {
		t.Skip("e2e/postfix-backend.sh needs root")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	script, _ := filepath.Abs("postfix-backend.sh")
	b := &readmeBackend{script: script, base: filepath.Join(t.TempDir(), "backend")}
	out, err := b.run(t, "start", fmt.Sprint(ln.Addr().(*net.TCPAddr).Port))
	if err == nil || strings.Contains(out, "listening") || !strings.Contains(out, "already in use") {
		t.Errorf("start on a busy port: %v\n%s", err, out)
	}
	if st, _ := b.run(t, "status"); !strings.Contains(st, "not running") {
		b.run(t, "stop")
		t.Errorf("a Postfix was left running: %s", st)
	}
}
