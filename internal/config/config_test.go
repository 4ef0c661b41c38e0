package config

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsguard/tlsguard/proxy"
)

const validConfig = `hostname: mail.example.org
state_dir: ./state
listeners:
  - name: submissions
    address: "127.0.0.1:2465"
    tls: implicit
  - name: submission
    address: "127.0.0.1:2587"
    tls: starttls
    require_tls: true
  - name: mx
    address: "127.0.0.1:2025"
    tls: starttls
    auth: false
tls:
  min_version: "1.2"
  certificates:
    - cert: cert.pem
      key: key.pem
  self_signed: true
backend:
  address: "127.0.0.1:2525"
  tls: none
  timeout: 10s
auth:
  users_file: users.htpasswd
policy: policies/default.yaml
limits:
  max_message_size: 10M
log:
  level: info
  format: json
`

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	p := filepath.Join(dir, "tlsguard.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfigValid(t *testing.T) {
	p := writeConfig(t, validConfig)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(p)
	if c.Policy != filepath.Join(dir, "policies/default.yaml") || c.Auth.UsersFile != filepath.Join(dir, "users.htpasswd") || c.StateDir != filepath.Join(dir, "state") {
		t.Errorf("paths not resolved against the config folder: %q %q %q", c.Policy, c.Auth.UsersFile, c.StateDir)
	}
	if c.TLS.SelfSigned || c.TLS.Certificates[0].Cert != filepath.Join(dir, "cert.pem") {
		t.Errorf("certificates must win over the self_signed fallback, paths resolved: %+v", c.TLS)
	}
	if c.Backend.Timeout != 10*time.Second || c.Limits.MaxMessageSize != 10<<20 {
		t.Errorf("backend timeout %v, max size %d", c.Backend.Timeout, c.Limits.MaxMessageSize)
	}
	ls := c.ProxyListeners()
	want := []proxy.ListenerConfig{
		{Name: "submissions", Address: "127.0.0.1:2465", TLS: proxy.TLSImplicit, Protocol: proxy.ProtocolSMTP, Auth: true},
		{Name: "submission", Address: "127.0.0.1:2587", TLS: proxy.TLSStartTLS, Protocol: proxy.ProtocolSMTP, RequireTLS: true, Auth: true},
		{Name: "mx", Address: "127.0.0.1:2025", TLS: proxy.TLSStartTLS, Protocol: proxy.ProtocolSMTP, Auth: false},
	}
	for i := range want {
		if ls[i] != want[i] {
			t.Errorf("listener %d = %+v, want %+v", i, ls[i], want[i])
		}
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	p := writeConfig(t, "hostname: mx.example.org\nlisteners: [{name: a, address: \"127.0.0.1:25\", tls: none}]\nbackend: {address: \"127.0.0.1:2525\"}\npolicy: p.yaml\n")
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Backend.TLS != "none" || c.Backend.Timeout != 30*time.Second || c.ShutdownGrace != 30*time.Second || c.NeedsTLS() {
		t.Errorf("defaults: %+v grace %v", c.Backend, c.ShutdownGrace)
	}
	if c.DSN != string(proxy.DSNAuthenticated) {
		t.Errorf("dsn defaults to %q, want authenticated", c.DSN)
	}
}

// Every error names the file, the line and the key.
func TestLoadConfigErrors(t *testing.T) {
	cases := []struct {
		name, from, to, want string
	}{
		{"unknown key", "  timeout: 10s\n", "  timeout: 10s\n  timout: 5s\n", ":25: backend.timout: unknown key"},
		{"bad tls mode", "    tls: implicit\n", "    tls: implicitt\n", `:6: listeners[0].tls: "implicitt" is not one of implicit, starttls, none`},
		{"bad duration", "  timeout: 10s\n", "  timeout: ten\n", `:24: backend.timeout: "ten" is not a duration`},
		{"bad size", "  max_message_size: 10M\n", "  max_message_size: 10X\n", `:29: limits.max_message_size: "10X" is not a size`},
		{"duplicate listener", "  - name: mx\n", "  - name: submission\n", `:11: listeners[2].name: "submission" is used by another listener`},
		{"bad address", "    address: \"127.0.0.1:2025\"\n", "    address: \"127.0.0.1\"\n", `:12: listeners[2].address: "127.0.0.1" is not host:port`},
		{"bad backend tls", "  tls: none\n", "  tls: ssl\n", `:23: backend.tls: "ssl" is not one of none, starttls, implicit`},
		{"wrong type", "    require_tls: true\n", "    require_tls: maybe\n", `:10: listeners[1].require_tls: must be true or false`},
		{"bad log level", "  level: info\n", "  level: loud\n", `:31: log.level: "loud" is not one of`},
		{"hostname", "hostname: mail.example.org\n", "hostname: \"mail example\"\n", `:1: hostname: "mail example" is not a valid host name`},
		{"both auth sources", "  users_file: users.htpasswd\n", "  users_file: users.htpasswd\n  backend: true\n", `:27: auth.backend: choose one`},
		{"negative auth_user_max_failures", "  max_message_size: 10M\n", "  max_message_size: 10M\n  auth_user_max_failures: -1\n", `limits.auth_user_max_failures: must not be negative`},
		{"negative auth_max_concurrent", "  max_message_size: 10M\n", "  max_message_size: 10M\n  auth_max_concurrent: -4\n", `limits.auth_max_concurrent: must not be negative`},
		{"require_tls without tls", "    tls: starttls\n    require_tls: true\n", "    tls: none\n    require_tls: true\n", `:10: listeners[1].require_tls: cannot be true`},
		{"bad dsn mode", "policy: policies/default.yaml\n", "policy: policies/default.yaml\ndsn: success\n", `:28: dsn: "success" is not one of authenticated, all, none`},
		{"listener cap over the default total", "    auth: false\n", "    auth: false\n    max_sessions: 2001\n", `:15: listeners[2].max_sessions: 2001 is more than limits.max_sessions (2000)`},
		{"negative listener cap", "    tls: implicit\n", "    tls: implicit\n    max_sessions: -1\n", `:7: listeners[0].max_sessions: must not be negative`},
		{"bad protocol", "    tls: implicit\n", "    tls: implicit\n    protocol: smtps\n", `:7: listeners[0].protocol: "smtps" is not one of smtp, imap, pop3`},
		{"imap without its backend", "    tls: implicit\n", "    tls: implicit\n    protocol: imap\n", `mailbox_backend.imap: is required by the listeners with protocol: imap`},
		{"pop3 on a plaintext listener", "    auth: false\n", "    auth: false\n    protocol: pop3\n", `:14: listeners[2].auth: cannot be false with protocol: pop3`},
		{"imap with require_tls", "    require_tls: true\n", "    require_tls: true\n    protocol: imap\n", `:10: listeners[1].require_tls: applies to smtp listeners only`},
		{"bad mailbox backend tls", "policy: policies/default.yaml\n", "policy: policies/default.yaml\nmailbox_backend:\n  imap: \"127.0.0.1:143\"\n  tls: ssl\n", `:30: mailbox_backend.tls: "ssl" is not one of none, starttls, implicit`},
		{"bad mailbox backend address", "policy: policies/default.yaml\n", "policy: policies/default.yaml\nmailbox_backend:\n  pop3: pop.example.org\n", `:29: mailbox_backend.pop3: "pop.example.org" is not host:port`},
		{"cluster without key_file", "policy: policies/default.yaml\n", "policy: policies/default.yaml\ncluster:\n  redis: {address: \"127.0.0.1:6379\"}\n", `:29: cluster.key_file: is required to share certificates or session_tickets`},
		{"cluster address and sentinel", "policy: policies/default.yaml\n", "policy: policies/default.yaml\ncluster:\n  redis:\n    address: \"127.0.0.1:6379\"\n    sentinel: {master: m, addresses: [\"127.0.0.1:26379\"]}\n  share: [rate_limits]\n", `:30: cluster.redis.address: and sentinel are exclusive`},
		{"cluster bad share", "policy: policies/default.yaml\n", "policy: policies/default.yaml\ncluster:\n  redis: {address: \"127.0.0.1:6379\"}\n  share: [rate_limits, sessions]\n", `:30: cluster.share: "sessions" is not one of certificates, auth_throttle, rate_limits, session_tickets`},
		{"cluster sentinel without master", "policy: policies/default.yaml\n", "policy: policies/default.yaml\ncluster:\n  redis:\n    sentinel: {addresses: [\"127.0.0.1\"]}\n  share: [rate_limits]\n", `cluster.redis.sentinel.master: is required`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(validConfig, tc.from) {
				t.Fatalf("test edit %q not found in the base config", tc.from)
			}
			p := writeConfig(t, strings.Replace(validConfig, tc.from, tc.to, 1))
			_, err := Load(p)
			if err == nil {
				t.Fatal("loaded without error")
			}
			if !strings.Contains(err.Error(), p+tc.want) && !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q\ndoes not contain %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), p) {
				t.Errorf("error %q does not start with the file name", err)
			}
		})
	}
}

// An imap listener and mailbox_backend reach the proxy, with the
// backend's defaults.
func TestLoadConfigMailbox(t *testing.T) {
	p := writeConfig(t, strings.Replace(validConfig, "    tls: implicit\n", "    tls: implicit\n    protocol: imap\n", 1)+
		"mailbox_backend:\n  imap: \"127.0.0.1:1143\"\n")
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.ProxyListeners()[0].Protocol; got != proxy.ProtocolIMAP {
		t.Errorf("protocol %q, want imap", got)
	}
	if m := c.ProxyMailbox(); m.IMAP != "127.0.0.1:1143" || m.TLS != "none" || m.Timeout != 30*time.Second {
		t.Errorf("mailbox backend %+v", m)
	}
}

// The AUTH throttle's keys reach the proxy's limits; unset, they take the
// defaults of Keys.
func TestLoadConfigAuthLimits(t *testing.T) {
	p := writeConfig(t, strings.Replace(validConfig, "  max_message_size: 10M\n",
		"  max_message_size: 10M\n  auth_user_max_failures: 20\n  auth_remember: 168h\n  auth_max_concurrent: 3\n", 1))
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	l := c.ProxyLimits()
	if l.AuthUserMaxFailures != 20 || l.AuthRemember != 168*time.Hour || l.AuthMaxConcurrent != 3 {
		t.Errorf("limits = %+v", l)
	}
	c, err = Load(writeConfig(t, validConfig))
	if err != nil {
		t.Fatal(err)
	}
	if l := c.ProxyLimits(); l.AuthUserMaxFailures != 50 || l.AuthRemember != 30*24*time.Hour || l.AuthMaxConcurrent != 8 {
		t.Errorf("defaults: %+v", l)
	}
}

// listeners[].max_sessions is checked against limits.max_sessions as the
// file sets it, and reaches the proxy.
func TestLoadConfigListenerMaxSessions(t *testing.T) {
	withCaps := func(mx int) string {
		cfg := strings.Replace(validConfig, "  max_message_size: 10M\n", "  max_message_size: 10M\n  max_sessions: 100\n", 1)
		return strings.Replace(cfg, "    auth: false\n", fmt.Sprintf("    auth: false\n    max_sessions: %d\n", mx), 1)
	}
	p := writeConfig(t, withCaps(101))
	_, err := Load(p)
	if want := p + ":15: listeners[2].max_sessions: 101 is more than limits.max_sessions (100)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want %q", err, want)
	}
	c, err := Load(writeConfig(t, withCaps(60)))
	if err != nil {
		t.Fatal(err)
	}
	if ls := c.ProxyListeners(); ls[2].MaxSessions != 60 || ls[0].MaxSessions != 0 {
		t.Errorf("listener caps %d, %d; want 60 for mx and 0 (none of its own) for submissions", ls[2].MaxSessions, ls[0].MaxSessions)
	}
}

// The cluster section: off by default with every default filled, and its
// paths made absolute.
func TestLoadConfigCluster(t *testing.T) {
	c, err := Load(writeConfig(t, validConfig))
	if err != nil {
		t.Fatal(err)
	}
	if c.Cluster.On() || c.Cluster.Shares(ShareRateLimits) || c.Cluster.Redis.Timeout != 100*time.Millisecond ||
		c.Cluster.Redis.KeyPrefix != "tlsguard:" || len(c.Cluster.Share) != 4 {
		t.Errorf("cluster defaults: %+v", c.Cluster)
	}
	p := writeConfig(t, validConfig+"cluster:\n  redis: {address: \"127.0.0.1:6379\", password_file: redis.secret}\n  key_file: cluster.key\n  share: [auth_throttle]\n")
	if c, err = Load(p); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Dir(p)
	if !c.Cluster.On() || !c.Cluster.Shares(ShareAuthThrottle) || c.Cluster.Shares(ShareCertificates) ||
		c.Cluster.KeyFile != filepath.Join(dir, "cluster.key") || c.Cluster.Redis.PasswordFile != filepath.Join(dir, "redis.secret") {
		t.Errorf("cluster: %+v", c.Cluster)
	}
}

func TestLoadConfigMissingRequired(t *testing.T) {
	p := writeConfig(t, "")
	_, err := Load(p)
	if err == nil {
		t.Fatal("empty config loaded")
	}
	for _, want := range []string{"hostname: is required", "listeners: at least one", "backend.address: is required", "policy: is required"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}
