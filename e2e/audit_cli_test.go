package e2e

import (
	"context"
	"errors"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestAuditCLI checks what a person sees: the table, the verdict line, the
// exit codes, and flags given after HOST as the usage line shows them.
func TestAuditCLI(t *testing.T) {
	d := auditStartDNS(t,
		`good.audit.test. 300 IN TXT "v=spf1 -all"`,
		`_dmarc.good.audit.test. 300 IN TXT "v=DMARC1; p=quarantine"`,
		`good.audit.test. 300 IN MX 0 .`,
	)
	run := func(args ...string) (string, string, int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), auditRunTimeout)
		defer cancel()
		cmd := exec.CommandContext(ctx, tlsguardBinary(t), append([]string{"audit"}, args...)...)
		var out, errOut strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Fatalf("tlsguard audit %v: %v", args, err)
		}
		return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
	}

	out, _, code := run("127.0.0.1", "--ports", "none", "--domain", "good.audit.test", "--resolver", d.Addr)
	if code != 0 {
		t.Errorf("exit %d for a good domain:\n%s", code, out)
	}
	for _, want := range []string{`GRADE\s+CHECK\s+DETAIL`, `\nOK\s+spf\s+v=spf1 -all`, `INFO\s+mx\s+null MX`, `\nPASS: 2 ok, 0 warning, 0 fail, 2 info`} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("table lacks %s:\n%s", want, out)
		}
	}

	out, _, code = run("127.0.0.1", "--ports", "none", "--domain", "missing.audit.test", "--resolver", d.Addr)
	if code != 1 || !regexp.MustCompile(`\nFAIL\s+spf\s+no SPF record[^\n]*\n\s+→ publish`).MatchString(out) || !strings.Contains(out, "\nFAIL: ") {
		t.Errorf("exit %d, want 1 with advice and a FAIL verdict:\n%s", code, out)
	}

	for _, args := range [][]string{
		{},
		{"127.0.0.1", "other-host"},
		{"127.0.0.1", "--ports", "2525"},
		{"127.0.0.1", "--ports", "gopher=70"},
		{"127.0.0.1", "--ca-file", "/nonexistent/ca.pem"},
		{"127.0.0.1", "--relay-to", "nobody"},
		{"no-such-host.audit.test", "--resolver", d.Addr, "--ports", "none"},
	} {
		_, errOut, code := run(args...)
		if code != 2 || errOut == "" {
			t.Errorf("tlsguard audit %v: exit %d, stderr %q; want 2 and a message", args, code, errOut)
		}
	}

	// --timeout bounds a resolver that never answers.
	start := time.Now()
	_, errOut, code := run("silent.audit.test", "--resolver", "127.0.0.1:9", "--timeout", "500ms", "--ports", "none")
	if code != 2 || time.Since(start) > 10*time.Second {
		t.Errorf("unanswered resolver: exit %d after %s (%s)", code, time.Since(start), errOut)
	}
}
