// Package config is tlsguard.yaml: its schema, the one table of defaults
// (Keys), the checks and the conversion into the values that proxy, certs
// and logging take. Those packages apply no defaults of their own, so the
// answer to "what happens when a key is left out" is in this package only.
//
// A new key is:
//   - a field with a yaml tag in its section's struct below (a pointer if
//     its zero value is a setting of its own, as pool_size: 0 is);
//   - its row in Keys, with its default (defaults.go);
//   - a check in its section's validator (validate.go) if some values are
//     wrong, naming the key with yamlx.Errorf(section.Pos, "key", ...);
//   - the field it feeds in ProxyLimits, ProxyBackend, ProxyListeners or
//     LogConfig (convert.go), if a package downstream needs it;
//   - its row in the README's configuration table, with the same default.
//
// TestKeysCoverSchema and TestREADMEConfigurationTable fail until the three
// lists (schema, Keys, README) agree.
package config

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/tlsguard/tlsguard/certs"
	"github.com/tlsguard/tlsguard/internal/yamlx"
	"github.com/tlsguard/tlsguard/proxy"
)

// Config is tlsguard.yaml. Every key, with its default, is listed in Keys
// and in the README's configuration table.
type Config struct {
	Pos             yamlx.Pos
	Hostname        string         `yaml:"hostname"`
	StateDir        string         `yaml:"state_dir"`
	Listeners       []Listener     `yaml:"listeners"`
	TLS             certs.Config   `yaml:"tls"`
	Backend         Backend        `yaml:"backend"`
	MailboxBackend  MailboxBackend `yaml:"mailbox_backend"`
	Auth            Auth           `yaml:"auth"`
	Policy          string         `yaml:"policy"`
	Log             Log            `yaml:"log"`
	Limits          Limits         `yaml:"limits"`
	BareLineEndings string         `yaml:"bare_line_endings"`
	DSN             string         `yaml:"dsn"`
	ShutdownGrace   time.Duration  `yaml:"shutdown_grace"`
	Admin           Admin          `yaml:"admin"`
	Cluster         Cluster        `yaml:"cluster"`

	file string // the config file, absolute
}

// Listener is one entry of listeners.
type Listener struct {
	Pos     yamlx.Pos
	Name    string `yaml:"name"`
	Address string `yaml:"address"`
	TLS     string `yaml:"tls"`
	// Protocol is what the listener speaks: smtp, imap or pop3.
	Protocol   string `yaml:"protocol"`
	RequireTLS bool   `yaml:"require_tls"`
	// Auth is a pointer because false (an MX port) differs from unset.
	Auth *bool `yaml:"auth"`
	// ProxyProtocol takes HAProxy PROXY headers (v1, v2) from these
	// load balancers only.
	ProxyProtocol *ProxyProtocol `yaml:"proxy_protocol"`
	// GreetingDelay holds back the greeting; clients that talk first are
	// disconnected (for MX ports).
	GreetingDelay time.Duration `yaml:"greeting_delay"`
	// MaxSessions caps this listener's open sessions inside
	// limits.max_sessions; 0 (unset): only limits.max_sessions.
	MaxSessions int `yaml:"max_sessions"`
}

// ProxyProtocol is a listener's proxy_protocol section.
type ProxyProtocol struct {
	Pos           yamlx.Pos
	Trusted       []string      `yaml:"trusted"`
	HeaderTimeout time.Duration `yaml:"header_timeout"`
}

// Backend is the backend section: the legacy server that receives the mail.
type Backend struct {
	Pos           yamlx.Pos
	Address       string        `yaml:"address"`
	TLS           string        `yaml:"tls"`
	Timeout       time.Duration `yaml:"timeout"`
	TLSServerName string        `yaml:"tls_server_name"`
	TLSCAFile     string        `yaml:"tls_ca_file"`
	TLSSkipVerify bool          `yaml:"tls_skip_verify"`
	// PoolSize is a pointer because 0 (no reuse) differs from unset.
	PoolSize *int          `yaml:"pool_size"`
	PoolIdle time.Duration `yaml:"pool_idle"`
	// DataDoneTimeout bounds the wait for the reply to the final dot.
	DataDoneTimeout time.Duration `yaml:"data_done_timeout"`
	// MaxConnections is a pointer so that a 0 written in the file is
	// refused rather than taken for unset.
	MaxConnections *int `yaml:"max_connections"`
	// ReservedAuthenticated is a pointer because 0 (none reserved)
	// differs from unset.
	ReservedAuthenticated *int `yaml:"reserved_authenticated"`
	// SpoolAfter frees the backend connection of a slower message.
	SpoolAfter time.Duration `yaml:"spool_after"`
}

// MailboxBackend is the mailbox_backend section: the legacy IMAP and POP3
// server behind the imap and pop3 listeners.
type MailboxBackend struct {
	Pos     yamlx.Pos
	IMAP    string        `yaml:"imap"`
	POP3    string        `yaml:"pop3"`
	TLS     string        `yaml:"tls"`
	Timeout time.Duration `yaml:"timeout"`
}

// Limits is the limits section: what one client may use.
type Limits struct {
	Pos              yamlx.Pos
	MaxMessageSize   yamlx.ByteSize `yaml:"max_message_size"`
	MaxRecipients    int            `yaml:"max_recipients"`
	MaxLineLength    int            `yaml:"max_line_length"`
	MaxSessions      int            `yaml:"max_sessions"`
	MaxSessionsPerIP int            `yaml:"max_sessions_per_ip"`
	CommandTimeout   time.Duration  `yaml:"command_timeout"`
	DataTimeout      time.Duration  `yaml:"data_timeout"`
	WriteTimeout     time.Duration  `yaml:"write_timeout"`
	HandshakeTimeout time.Duration  `yaml:"handshake_timeout"`
	AuthFailDelay    time.Duration  `yaml:"auth_fail_delay"`
	AuthMaxFailures  int            `yaml:"auth_max_failures"`
	AuthFailWindow   time.Duration  `yaml:"auth_fail_window"`

	AuthUserMaxFailures int           `yaml:"auth_user_max_failures"`
	AuthRemember        time.Duration `yaml:"auth_remember"`
	AuthMaxConcurrent   int           `yaml:"auth_max_concurrent"`
}

// Log is the log section.
type Log struct {
	Pos    yamlx.Pos
	Level  string `yaml:"level"`
	Format string `yaml:"format"`
}

// Admin is the admin section: an HTTP listener for metrics and health, off
// unless an address is given. Keep it on loopback or a private network: it
// has no authentication.
type Admin struct {
	Address string `yaml:"address"`
}

// Cluster is the cluster section: the state a fleet of instances behind a
// load balancer shares through Redis (docs/scaling.md). Off unless
// cluster.redis names an address or a sentinel.
type Cluster struct {
	Pos   yamlx.Pos
	Redis Redis `yaml:"redis"`
	// Share names what is shared: certificates, auth_throttle,
	// rate_limits, session_tickets.
	Share []string `yaml:"share"`
	// KeyFile holds the secret that encrypts certificates' keys, the ACME
	// account and the ticket keys in Redis; the same file on every
	// instance.
	KeyFile string `yaml:"key_file"`
}

// Redis is cluster.redis: how to reach the shared Redis.
type Redis struct {
	Pos          yamlx.Pos
	Address      string        `yaml:"address"`
	Sentinel     *Sentinel     `yaml:"sentinel"`
	Username     string        `yaml:"username"`
	PasswordFile string        `yaml:"password_file"`
	TLS          bool          `yaml:"tls"`
	CAFile       string        `yaml:"ca_file"`
	KeyPrefix    string        `yaml:"key_prefix"`
	Timeout      time.Duration `yaml:"timeout"`
}

// Sentinel is cluster.redis.sentinel: Redis Sentinel finds the master.
type Sentinel struct {
	Pos       yamlx.Pos
	Master    string   `yaml:"master"`
	Addresses []string `yaml:"addresses"`
}

// The parts of cluster.share.
const (
	ShareCertificates   = "certificates"
	ShareAuthThrottle   = "auth_throttle"
	ShareRateLimits     = "rate_limits"
	ShareSessionTickets = "session_tickets"
)

// On reports whether a Redis is configured.
func (c *Cluster) On() bool { return c.Redis.Address != "" || c.Redis.Sentinel != nil }

// Shares reports whether part is shared.
func (c *Cluster) Shares(part string) bool {
	if !c.On() {
		return false
	}
	for _, s := range c.Share {
		if s == part {
			return true
		}
	}
	return false
}

// Load reads a config file, decodes it with ${NAME} and ${NAME:-default}
// taken from the environment (yamlx.DecodeEnv), fills the defaults from Keys,
// validates it and makes its relative paths absolute against the file's
// folder. The error lists every problem as file:line: key: message.
func Load(path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	data, err := os.ReadFile(abs)
	if err != nil {
		return nil, err
	}
	var c Config
	if err := yamlx.DecodeEnv(path, data, &c, os.LookupEnv); err != nil {
		return nil, err
	}
	c.file = abs
	c.placeSections(path)
	if err := fill(&c); err != nil {
		return nil, err
	}
	c.normalize()
	if errs := c.Validate(); len(errs) > 0 {
		return nil, errs
	}
	c.resolvePaths(filepath.Dir(abs))
	return &c, nil
}

// File is the absolute path the config was loaded from.
func (c *Config) File() string { return c.file }

// placeSections gives the file and the sections absent from it a position,
// so that an error about what they lack still names the file and the key.
func (c *Config) placeSections(path string) {
	if c.Pos.File == "" {
		c.Pos = yamlx.Pos{File: path, Line: 1}
	}
	c.TLS.Pos = c.section(c.TLS.Pos, "tls")
	c.Backend.Pos = c.section(c.Backend.Pos, "backend")
	c.MailboxBackend.Pos = c.section(c.MailboxBackend.Pos, "mailbox_backend")
	c.Auth.Pos = c.section(c.Auth.Pos, "auth")
	c.Auth.placeSources()
	c.Limits.Pos = c.section(c.Limits.Pos, "limits")
	c.Log.Pos = c.section(c.Log.Pos, "log")
	c.Cluster.Pos = c.section(c.Cluster.Pos, "cluster")
	if c.Cluster.Redis.Pos.File == "" {
		c.Cluster.Redis.Pos = c.Cluster.Pos
	}
}

// section returns p, or for a section absent from the file, a position at
// the top of the file named by key.
func (c *Config) section(p yamlx.Pos, key string) yamlx.Pos {
	if p.File != "" {
		return p
	}
	return yamlx.Pos{File: c.Pos.File, Line: c.Pos.Line, Key: key}
}

// normalize applies the rules by which one key gives way to another:
// self_signed is the fallback for when no certificate files are listed, so
// a file may set both (the README's example does).
func (c *Config) normalize() {
	if c.NeedsTLS() && len(c.TLS.Certificates) > 0 {
		c.TLS.SelfSigned = false
	}
}

// resolvePaths makes file paths absolute, relative to the config's folder.
func (c *Config) resolvePaths(dir string) {
	abs := func(p *string) {
		if *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	abs(&c.StateDir)
	abs(&c.Policy)
	c.Auth.resolvePaths(abs)
	abs(&c.Backend.TLSCAFile)
	abs(&c.Cluster.KeyFile)
	abs(&c.Cluster.Redis.PasswordFile)
	abs(&c.Cluster.Redis.CAFile)
	c.TLS.ResolvePaths(dir)
}

// NeedsTLS reports whether any listener uses TLS (implicit or STARTTLS), and
// so whether the tls section is used at all.
func (c *Config) NeedsTLS() bool {
	for _, l := range c.Listeners {
		switch proxy.TLSMode(l.TLS) {
		case proxy.TLSImplicit, proxy.TLSStartTLS:
			return true
		}
	}
	return false
}
