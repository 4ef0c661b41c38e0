package e2e

// tlsguard check (as nginx -t): what serve would refuse at start, without
// serving.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckCommand(t *testing.T) {
	pf := startPostfix(t)
	closed := loopbackAddr(t) // nothing listens there
	cases := []struct {
		name     string
		edit     func(t *testing.T, dir, cfg string) string
		args     []string
		wantCode int
		want     string
	}{
		{"fine, backend greeted", nil, []string{"--backend"}, 0, "tlsguard.yaml: ok"},
		{"backend down, not asked", func(t *testing.T, dir, cfg string) string {
			return strings.Replace(cfg, pf.Addr, closed, 1)
		}, nil, 0, "tlsguard.yaml: ok"},
		{"backend down", func(t *testing.T, dir, cfg string) string {
			return strings.Replace(cfg, pf.Addr, closed, 1)
		}, []string{"--backend"}, 1, "backend " + closed + ": "},
		{"open relay policy", func(t *testing.T, dir, cfg string) string {
			writeFile(t, filepath.Join(dir, "policy.yaml"), policyYAML([]string{"example.org"}, []string{"203.0.113.0/24"}))
			return cfg
		}, nil, 1, "open relay"},
		{"certificate that does not load", func(t *testing.T, dir, cfg string) string {
			writeFile(t, filepath.Join(dir, "cert.pem"), "not a certificate\n")
			return cfg
		}, nil, 1, "tlsguard.yaml:9: tls.certificates[0]: "},
		{"missing users file", func(t *testing.T, dir, cfg string) string {
			os.Remove(filepath.Join(dir, "users.htpasswd"))
			return cfg
		}, nil, 1, "tlsguard.yaml:14: auth.users_file: "},
		{"bad key", func(t *testing.T, dir, cfg string) string {
			return strings.Replace(cfg, "  level: info\n", "  level: loud\n", 1)
		}, nil, 1, "tlsguard.yaml:17: log.level: "},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := strings.Replace(opsConfig(t, dir), "127.0.0.1:2525", pf.Addr, 1)
			if tc.edit != nil {
				cfg = tc.edit(t, dir, cfg)
			}
			writeFile(t, filepath.Join(dir, "tlsguard.yaml"), cfg)
			code, out := runTLSGuard(t, dir, append([]string{"check", "--config", "tlsguard.yaml"}, tc.args...)...)
			if code != tc.wantCode || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, want %d and %q in:\n%s", code, tc.wantCode, tc.want, out)
			}
			// check creates nothing: no state folder, no spool.
			if _, err := os.Stat(filepath.Join(dir, "state")); err == nil {
				t.Errorf("check created %s", filepath.Join(dir, "state"))
			}
		})
	}
}
