package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Users in the htpasswd file every tlsguard instance gets.
const (
	aliceUser = "alice"
	alicePass = "alice-secret-1"
	bobUser   = "bob"
	bobPass   = "bob-secret-2"
)

// relayDenied is the contract's exact reply to unauthenticated relaying.
const relayDenied = "550 5.7.1 Relaying denied. Authentication required."

// TLSGuard is a running `tlsguard serve` with four listeners, one per role.
type TLSGuard struct {
	Submissions string // tls: implicit (the 465 role)
	Submission  string // tls: starttls, require_tls: false (the 587 role)
	Strict      string // tls: starttls, require_tls: true
	MX          string // tls: starttls, auth: false (the 25 role)

	PKI        *testPKI
	Dir        string
	ConfigFile string
	LogFile    string

	cmd    *exec.Cmd
	exited chan struct{}
}

type guardOptions struct {
	localDomains    []string
	trustedNetworks []string
	extraYAML       string
	extraListeners  string
	bcryptCost      int
}

type guardOption func(*guardOptions)

// withTrustedNetworks sets the policy's trusted_networks (CIDRs that may
// relay without AUTH). The default trusts none of loopback.
func withTrustedNetworks(cidrs ...string) guardOption {
	return func(o *guardOptions) { o.trustedNetworks = cidrs }
}

// withListeners adds entries (YAML list items) to the listeners.
func withListeners(yaml string) guardOption {
	return func(o *guardOptions) { o.extraListeners += yaml }
}

// withConfig appends top-level YAML to tlsguard.yaml (e.g. a limits: section).
func withConfig(yaml string) guardOption {
	return func(o *guardOptions) { o.extraYAML += yaml }
}

// withBcryptCost has the users file hashed at cost (htpasswd -C) instead
// of htpasswd's default 5, so that a check takes as long as on a real
// server (cost 10: tens of milliseconds).
func withBcryptCost(cost int) guardOption {
	return func(o *guardOptions) { o.bcryptCost = cost }
}

const guardStartTimeout = 30 * time.Second

// startTLSGuard writes a config, a users file and a policy for the backend,
// starts the binary and waits for all its listeners. It is stopped with
// SIGTERM when the test ends; its log is printed if the test failed.
func startTLSGuard(t testing.TB, backend *Postfix, opts ...guardOption) *TLSGuard {
	t.Helper()
	o := guardOptions{
		localDomains: []string{"example.org"},
		// A network no test client is in: loopback is not trusted unless a
		// test says so.
		trustedNetworks: []string{"192.0.2.0/24"},
	}
	for _, opt := range opts {
		opt(&o)
	}
	dir := t.TempDir()
	g := &TLSGuard{
		Submissions: loopbackAddr(t),
		Submission:  loopbackAddr(t),
		Strict:      loopbackAddr(t),
		MX:          loopbackAddr(t),
		PKI:         newTestPKI(t, dir),
		Dir:         dir,
		ConfigFile:  filepath.Join(dir, "tlsguard.yaml"),
		LogFile:     filepath.Join(dir, "tlsguard.log"),
	}
	usersFile := writeHtpasswdCost(t, dir, map[string]string{aliceUser: alicePass, bobUser: bobPass}, o.bcryptCost)
	policyFile := filepath.Join(dir, "policy.yaml")
	writeFile(t, policyFile, policyYAML(o.localDomains, o.trustedNetworks))
	cfg := strings.Replace(g.configYAML(backend.Addr, usersFile, policyFile), "listeners:\n", "listeners:\n"+o.extraListeners, 1)
	writeFile(t, g.ConfigFile, cfg+o.extraYAML)

	g.cmd, g.exited = runGuard(t, dir, g.ConfigFile, g.LogFile)
	t.Cleanup(func() {
		g.stop(t)
		if t.Failed() {
			t.Logf("tlsguard config:\n%s\ntlsguard log:\n%s", readFile(g.ConfigFile), g.Log())
		}
	})

	for _, addr := range []string{g.Submission, g.Strict, g.MX} {
		if err := waitGreeting(addr, g.exited, guardStartTimeout); err != nil {
			t.Fatalf("tlsguard: %v\nlog:\n%s", err, g.Log())
		}
	}
	if err := waitListening(g.Submissions, g.exited, guardStartTimeout); err != nil {
		t.Fatalf("tlsguard: %v\nlog:\n%s", err, g.Log())
	}
	return g
}

func (g *TLSGuard) configYAML(backend, usersFile, policyFile string) string {
	return fmt.Sprintf(`hostname: mail.example.org
state_dir: %q
listeners:
  - name: submissions
    address: %q
    tls: implicit
  - name: submission
    address: %q
    tls: starttls
    require_tls: false
  - name: submission-strict
    address: %q
    tls: starttls
    require_tls: true
  - name: mx
    address: %q
    tls: starttls
    auth: false
tls:
  min_version: "1.2"
  certificates:
    - cert: %q
      key: %q
backend:
  address: %q
  tls: none
  timeout: 30s
auth:
  users_file: %q
policy: %q
log:
  level: debug
  format: json
`, filepath.Join(g.Dir, "state"), g.Submissions, g.Submission, g.Strict, g.MX,
		g.PKI.CertFile, g.PKI.KeyFile, backend, usersFile, policyFile)
}

func policyYAML(localDomains, trustedNetworks []string) string {
	var b strings.Builder
	b.WriteString("local_domains:\n")
	for _, d := range localDomains {
		fmt.Fprintf(&b, "  - %q\n", d)
	}
	b.WriteString("trusted_networks:\n")
	for _, n := range trustedNetworks {
		fmt.Fprintf(&b, "  - %q\n", n)
	}
	return b.String()
}

// writeHtpasswd writes a users file with the real htpasswd tool, bcrypt (-B),
// as an admin would.
func writeHtpasswd(t testing.TB, dir string, users map[string]string) string {
	t.Helper()
	return writeHtpasswdCost(t, dir, users, 0)
}

// writeHtpasswdCost is writeHtpasswd at a bcrypt cost; 0 is htpasswd's default.
func writeHtpasswdCost(t testing.TB, dir string, users map[string]string, cost int) string {
	t.Helper()
	htpasswd := requireTool(t, "htpasswd")
	path := filepath.Join(dir, "users.htpasswd")
	create := "-c"
	for user, pass := range users {
		args := []string{"-B", "-i"}
		if cost > 0 {
			args = append(args, "-C", strconv.Itoa(cost))
		}
		if create != "" {
			args = append(args, create)
			create = ""
		}
		cmd := exec.Command(htpasswd, append(args, path, user)...)
		cmd.Stdin = strings.NewReader(pass + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("htpasswd: %v\n%s", err, out)
		}
	}
	if b := readFile(path); !strings.Contains(b, ":$2y$") {
		t.Fatalf("htpasswd -B wrote no bcrypt hash:\n%s", b)
	}
	return path
}

// stop sends SIGTERM and waits for the process to finish its sessions.
// runGuard starts `tlsguard serve --config cfg` with dir as its working
// directory and its output in logFile. It dies with the test binary. The
// channel closes once it has exited; stopping it is the caller's cleanup.
func runGuard(t testing.TB, dir, cfg, logFile string) (*exec.Cmd, chan struct{}) {
	t.Helper()
	logf, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(tlsguardBinary(t), "serve", "--config", cfg)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting tlsguard: %v", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	return cmd, exited
}

func (g *TLSGuard) stop(t testing.TB) {
	select {
	case <-g.exited:
		return
	default:
	}
	if terminate(g.cmd, g.exited, 40*time.Second) {
		t.Errorf("tlsguard did not exit within 40s of SIGTERM; killed")
	} else if code := g.cmd.ProcessState.ExitCode(); code != 0 {
		t.Logf("tlsguard exited with status %d after SIGTERM", code)
	}
}

// Log is everything tlsguard wrote to stdout and stderr.
func (g *TLSGuard) Log() string {
	const max = 64 << 10
	s := readFile(g.LogFile)
	if len(s) > max {
		s = "...\n" + s[len(s)-max:]
	}
	return s
}

// expectLogLine waits until tlsguard's JSON log has a line whose "msg" is
// msg and whose text contains every value (the session line is written when
// the session ends, shortly after the client's QUIT).
func expectLogLine(t testing.TB, g *TLSGuard, msg string, values ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var candidates []string
		for _, line := range strings.Split(g.Log(), "\n") {
			var rec struct {
				Msg string `json:"msg"`
			}
			if json.Unmarshal([]byte(line), &rec) != nil || rec.Msg != msg {
				continue
			}
			candidates = append(candidates, line)
			if containsAll(line, values) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Errorf("no %q log line contains all of %q; %q lines:\n%s", msg, values, msg, strings.Join(candidates, "\n"))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func containsAll(s string, values []string) bool {
	for _, v := range values {
		if !strings.Contains(s, v) {
			return false
		}
	}
	return true
}

// loopbackAddr returns 127.0.0.1:<a port free a moment ago>.
func loopbackAddr(t testing.TB) string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func readFile(path string) string {
	b, _ := os.ReadFile(path)
	return string(bytes.ToValidUTF8(b, []byte("?")))
}
