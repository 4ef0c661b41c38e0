package e2e

// What an operator gets wrong first: indentation, a missing file, a log
// level. Each is reported as file:line: key: message and tlsguard exits 2
// before it listens.

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// opsConfig is a config whose files all exist in dir; a case adds its
// lines at the end.
func opsConfig(t *testing.T, dir string) string {
	t.Helper()
	return minimalConfig(t, dir, loopbackAddr(t), "  address: \"127.0.0.1:2525\"\n") + "log:\n  level: info\n"
}

// minimalConfig writes a certificate, a users file and a policy into dir
// and returns a config with one implicit-TLS listener on listen that uses
// them; backend is the backend section's body. Line numbers are fixed: the
// backend section's body starts on line 12.
func minimalConfig(t *testing.T, dir, listen, backend string) string {
	t.Helper()
	pki := newTestPKI(t, dir)
	users := writeHtpasswd(t, dir, map[string]string{aliceUser: alicePass})
	writeFile(t, filepath.Join(dir, "policy.yaml"), policyYAML([]string{"example.org"}, nil))
	return fmt.Sprintf(`hostname: mail.example.org
state_dir: state
listeners:
  - name: submissions
    address: %q
    tls: implicit
tls:
  certificates:
    - cert: %q
      key: %q
backend:
%sauth:
  users_file: %q
policy: policy.yaml
`, listen, pki.CertFile, pki.KeyFile, backend, users)
}

// runTLSGuard runs the binary with args in dir and returns its exit code
// and output.
func runTLSGuard(t *testing.T, dir string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, tlsguardBinary(t), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("tlsguard %v did not exit within 60s:\n%s", args, out)
	}
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("tlsguard %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

func TestConfigErrorsAtTheirLine(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		from, to string // an edit of opsConfig
		want     string // in the output, after "tlsguard.yaml:"
	}{
		// The over-indented key comes after comments and a quoted value:
		// yaml.v3 alone names the line of "backend:".
		{"indentation after comments", "  address: \"127.0.0.1:2525\"\n",
			"  address: \"127.0.0.1:2525\"\n  # the legacy server\n  # on this host\n  # port 2525\n    timeout: 30s\n",
			"16: invalid YAML: "},
		{"under-indented key after comments", "  address: \"127.0.0.1:2525\"\n",
			"  address: \"127.0.0.1:2525\"\n  # the legacy server\n  # on this host\n timeout: 30s\n",
			"15: invalid YAML: did not find expected key"},
		{"missing policy", "policy: policy.yaml\n", "policy: nowhere.yaml\n", "15: policy: "},
		{"missing users file", "  users_file: ", "  users_file: /nonexistent/users.htpasswd\n  #", "14: auth.users_file: /nonexistent/users.htpasswd: no such file or directory"},
		{"missing certificate", "    - cert: ", "    - cert: /nonexistent/cert.pem\n      #", "9: tls.certificates[0].cert: /nonexistent/cert.pem: no such file or directory"},
		{"missing htpasswd source", "  users_file: ", "  sources:\n    - htpasswd: {file: /nonexistent/ht}\n  #", "15: auth.sources[0].htpasswd.file: /nonexistent/ht: no such file or directory"},
		{"log level", "  level: info\n", "  level: loud\n", `17: log.level: "loud" is not one of debug, info, warn, error`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			base := opsConfig(t, dir)
			if !strings.Contains(base, tc.from) {
				t.Fatalf("test bug: %q not in the config", tc.from)
			}
			cfg := strings.Replace(base, tc.from, tc.to, 1)
			writeFile(t, filepath.Join(dir, "tlsguard.yaml"), cfg)
			code, out := runTLSGuard(t, dir, "serve", "--config", "tlsguard.yaml")
			if code != 2 || !strings.Contains(out, "tlsguard.yaml:"+tc.want) {
				t.Errorf("exit %d; want 2 and %q in:\n%s\nconfig:\n%s", code, "tlsguard.yaml:"+tc.want, out, cfg)
			}
		})
	}
}
