package e2e

import (
	"context"
	"encoding/json"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const clientTimeout = 90 * time.Second

// swaksRun is the transcript of one swaks run.
type swaksRun struct {
	out  string
	exit int
}

// runSwaks runs swaks against addr with the given arguments; the test's CA
// is trusted and the certificate verified.
func runSwaks(t testing.TB, addr string, pki *testPKI, args ...string) swaksRun {
	t.Helper()
	swaks := requireTool(t, "swaks")
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	base := []string{"--server", host, "--port", port, "--ehlo", "client.example.net",
		"--tls-verify", "--tls-ca-path", pki.CAFile, "--tls-sni", serverName, "--timeout", "30"}
	cmd := exec.CommandContext(ctx, swaks, append(base, args...)...)
	out, err := cmd.CombinedOutput()
	r := swaksRun{out: string(out), exit: cmd.ProcessState.ExitCode()}
	if ctx.Err() != nil {
		t.Fatalf("swaks timed out after %v:\n%s", clientTimeout, out)
	}
	if err != nil && r.exit < 0 {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	t.Logf("swaks %s\n%s", strings.Join(args, " "), out)
	return r
}

// expectOK fails unless swaks reported success.
func (r swaksRun) expectOK(t testing.TB) {
	t.Helper()
	if r.exit != 0 {
		t.Fatalf("swaks exited %d, want 0; transcript above", r.exit)
	}
}

// replyAfter returns the server's reply line that follows the client line
// starting with sent (swaks marks client lines "->"/"~>" and server lines
// "<-"/"<~" for plaintext/TLS).
func (r swaksRun) replyAfter(sent string) string {
	lines := strings.Split(r.out, "\n")
	for i, l := range lines {
		l = strings.TrimSpace(l)
		if (strings.HasPrefix(l, "-> ") || strings.HasPrefix(l, "~> ")) && strings.HasPrefix(strings.TrimSpace(l[3:]), sent) {
			for _, next := range lines[i+1:] {
				next = strings.TrimSpace(next)
				if strings.HasPrefix(next, "<-") || strings.HasPrefix(next, "<~") {
					next = strings.TrimLeft(next[2:], "* ") // "<** " marks an error reply
					return strings.TrimSpace(next)
				}
			}
		}
	}
	return ""
}

// pyStep is one line of testdata/smtp_client.py's output.
type pyStep struct {
	Step     string            `json:"step"`
	Code     int               `json:"code"`
	Msg      string            `json:"msg"`
	Features map[string]string `json:"features"`
	Version  string            `json:"version"`
	Cipher   string            `json:"cipher"`
	Rcpt     string            `json:"rcpt"`
}

type pyRun []pyStep

// runPython runs testdata/smtp_client.py (Python's smtplib) with the given
// arguments, trusting the test's CA.
func runPython(t testing.TB, addr string, pki *testPKI, args ...string) pyRun {
	t.Helper()
	python := requireTool(t, "python3")
	host, port, _ := net.SplitHostPort(addr)
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	script, _ := filepath.Abs(filepath.Join("testdata", "smtp_client.py"))
	all := append([]string{script, "--host", host, "--port", port, "--cafile", pki.CAFile}, args...)
	out, err := exec.CommandContext(ctx, python, all...).CombinedOutput()
	t.Logf("smtp_client.py %s\n%s", strings.Join(args, " "), out)
	if err != nil {
		t.Fatalf("smtp_client.py: %v", err)
	}
	var run pyRun
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var s pyStep
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			t.Fatalf("smtp_client.py printed %q: %v", line, err)
		}
		run = append(run, s)
	}
	return run
}

// step returns the last step of this name; it fails if there is none.
func (r pyRun) step(t testing.TB, name string) pyStep {
	t.Helper()
	for i := len(r) - 1; i >= 0; i-- {
		if r[i].Step == name {
			return r[i]
		}
	}
	t.Fatalf("smtplib session has no %q step (steps: %v)", name, r)
	return pyStep{}
}

// noErrors fails if the Python client hit an exception.
func (r pyRun) noErrors(t testing.TB) {
	t.Helper()
	for _, s := range r {
		if s.Step == "error" {
			t.Fatalf("smtplib: %s", s.Msg)
		}
	}
}
