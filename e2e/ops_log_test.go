package e2e

// The log an operator reads: every hang-up says why, reloads say what they
// read and what they refused, log.level follows SIGHUP, and a clean exit
// ends with a line of its own.

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
)

func TestOpsSessionEndForHangUps(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("limits:\n  command_timeout: 1s\n  auth_fail_delay: 50ms\n  auth_max_failures: 2\n"))

	idle := dialSMTPFrom(t, "127.0.21.1", g.MX)
	idle.ehlo("idle.example.net")
	idle.read().expectPrefix(t, "421 4.4.2 ")
	expectLogLine(t, g, "session", `"helo":"idle.example.net"`, `"end":"timeout"`)

	guess := dialImplicitTLSFrom(t, "127.0.21.2", g.Submissions, g.PKI.clientTLS())
	guess.ehlo("guesser.example.net")
	guess.authPlain("", bobUser, "guess-1").expectPrefix(t, "535 5.7.8 ")
	guess.authPlain("", bobUser, "guess-2").expectPrefix(t, "421 4.7.0 ")
	guess.expectClosed()
	expectLogLine(t, g, "session", `"helo":"guesser.example.net"`, `"end":"auth throttled"`)
}

// logLines returns tlsguard's JSON log lines with the given msg.
func logLines(g *TLSGuard, msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(readFile(g.LogFile), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			out = append(out, rec)
		}
	}
	return out
}

func TestOpsReloadAndStopLogLines(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)
	policyFile := g.Dir + "/policy.yaml"
	failHandshake(t, g, "127.0.21.4")
	expectLogLine(t, g, "TLS handshake failed", `"client_ip":"127.0.21.4"`)

	// A SIGHUP whose new listener cannot bind (the port is taken) and
	// whose log level is info instead of debug.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := readFile(g.ConfigFile)
	cfg = strings.Replace(cfg, "  level: debug\n", "  level: info\n", 1)
	cfg = strings.Replace(cfg, "tls:\n", fmt.Sprintf("  - name: extra\n    address: %q\n    tls: none\ntls:\n", taken.Addr().String()), 1)
	writeFile(t, g.ConfigFile, cfg)
	g.cmd.Process.Signal(syscall.SIGHUP)
	expectLogLine(t, g, "listeners reload refused; the old one stays in force", "address already in use")
	expectLogLine(t, g, "config reloaded in part; the running values stay for what was refused", `"kept":["listeners"]`, g.ConfigFile)
	expectLogLine(t, g, "log level changed", `"from":"debug"`, `"to":"info"`)
	expectLogLine(t, g, "policy reloaded", fmt.Sprintf(`"policy":%q`, policyFile))
	if n := len(logLines(g, "config reloaded")); n != 0 {
		t.Errorf("%d \"config reloaded\" lines after a refused part", n)
	}
	// At info, the debug line is gone.
	failHandshake(t, g, "127.0.21.5")
	for _, l := range logLines(g, "TLS handshake failed") {
		if l["client_ip"] == "127.0.21.5" {
			t.Errorf("debug line logged after log.level became info: %v", l)
		}
	}

	// A whole reload says "config reloaded" and names the file.
	writeFile(t, g.ConfigFile, strings.Replace(cfg, fmt.Sprintf("  - name: extra\n    address: %q\n    tls: none\n", taken.Addr().String()), "", 1))
	g.cmd.Process.Signal(syscall.SIGHUP)
	expectLogLine(t, g, "config reloaded", fmt.Sprintf(`"config":%q`, g.ConfigFile))

	g.stop(t)
	expectLogLine(t, g, "shutting down", `"grace":"30s"`)
	lines := strings.Split(strings.TrimSpace(readFile(g.LogFile)), "\n")
	var last map[string]any
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil || last["msg"] != "tlsguard stopped" || last["level"] != "info" {
		t.Errorf("last log line is %s, want an info \"tlsguard stopped\"", lines[len(lines)-1])
	}
}

// failHandshake speaks plaintext to an implicit TLS listener from src and
// waits for the session line: at debug level, tlsguard also logs "TLS
// handshake failed".
func failHandshake(t *testing.T, g *TLSGuard, src string) {
	t.Helper()
	c := dialFrom(t, src, g.Submissions)
	fmt.Fprintf(c, "EHLO plain.example.net\r\n")
	expectLogLine(t, g, "session", fmt.Sprintf(`"client_ip":%q`, src), `"end":"tls handshake failed"`)
	c.Close()
}
