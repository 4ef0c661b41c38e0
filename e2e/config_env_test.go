package e2e

// ${NAME} and ${NAME:-default} in the config and the policy come from the
// environment; an unset one stops tlsguard with file:line:key.

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigEnvExpansion(t *testing.T) {
	pf := startPostfix(t)
	dir := t.TempDir()
	addr := loopbackAddr(t)
	t.Setenv("TG_E2E_HOSTNAME", "mx.env.test")
	t.Setenv("TG_E2E_BACKEND", pf.Addr)
	t.Setenv("TG_E2E_DOMAIN", "example.org")
	t.Setenv("TG_E2E_LISTEN", addr)
	pol := filepath.Join(dir, "policy.yaml")
	writeFile(t, pol, "local_domains: [\"${TG_E2E_DOMAIN}\"]\ntrusted_networks: []\n")
	cfg := filepath.Join(dir, "tlsguard.yaml")
	// max_sessions from a default: a plain ${...} is typed as if written
	// there; $$ is a literal $ (the listener's name in the log).
	writeFile(t, cfg, fmt.Sprintf(`hostname: ${TG_E2E_HOSTNAME}
state_dir: %q
listeners:
  - name: "mx$$env"
    address: ${TG_E2E_LISTEN}
    tls: none
    max_sessions: ${TG_E2E_UNSET_MAX:-50}
backend:
  address: "${TG_E2E_BACKEND}"
policy: %q
`, filepath.Join(dir, "state"), pol))
	g := startBinary(t, cfg, addr)

	c := dialSMTPRaw(t, "127.0.0.1", addr)
	c.read().expectPrefix(t, "220 mx.env.test ")
	c.ehlo("client.test")
	c.cmd("MAIL FROM:<x@client.test>").expect(t, 250)
	c.cmd("RCPT TO:<someone@elsewhere.test>").expectPrefix(t, "550 5.7.1 ")
	c.cmd("RCPT TO:<"+bob+">").expect(t, 250)
	c.cmd("DATA").expect(t, 354)
	c.send("Subject: from the environment\r\n\r\nhello\r\n.\r\n")
	c.read().expect(t, 250)
	c.cmd("QUIT")
	pf.WaitMessages(t, bob, 1)
	expectLogLine(t, g, "session", `"listener":"mx$env"`)
}

func TestConfigEnvUnsetNamesFileLineKey(t *testing.T) {
	bin := tlsguardBinary(t)
	for _, tc := range []struct {
		name, config, policy, want string
	}{
		{"config", "backend:\n  address: ${TG_E2E_NOT_SET}\n", "local_domains: [example.org]\n",
			"tlsguard.yaml:7: backend.address: environment variable TG_E2E_NOT_SET is not set"},
		{"policy", "backend:\n  address: 127.0.0.1:25\n", "trusted_networks: []\nlocal_domains:\n  - ${TG_E2E_NOT_SET_DOMAIN}\n",
			"policy.yaml:3: local_domains[0]: environment variable TG_E2E_NOT_SET_DOMAIN is not set"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, filepath.Join(dir, "policy.yaml"), tc.policy)
			cfg := filepath.Join(dir, "tlsguard.yaml")
			writeFile(t, cfg, fmt.Sprintf("hostname: mail.example.org\nstate_dir: %q\nlisteners:\n  - {name: mx, address: %q, tls: none}\npolicy: policy.yaml\n%s",
				filepath.Join(dir, "state"), loopbackAddr(t), tc.config))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "serve", "--config", cfg)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if err == nil || !strings.Contains(string(out), tc.want) {
				t.Fatalf("serve: %v; want an error containing %q:\n%s", err, tc.want, out)
			}
		})
	}
}
