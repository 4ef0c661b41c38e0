package main

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/tlsguard/tlsguard/certs"
	"github.com/tlsguard/tlsguard/internal/yamlx"
	"github.com/tlsguard/tlsguard/logging"
	"github.com/tlsguard/tlsguard/policy"
	"github.com/tlsguard/tlsguard/proxy"
)

// Config is tlsguard.yaml. Keys and defaults are documented in the README
// configuration table; tlsguard.yaml in the repository is a commented example.
type Config struct {
	Pos             yamlx.Pos
	Hostname        string         `yaml:"hostname"`
	StateDir        string         `yaml:"state_dir"`
	Listeners       []ListenerConf `yaml:"listeners"`
	TLS             certs.Config   `yaml:"tls"`
	Backend         BackendConf    `yaml:"backend"`
	Auth            AuthConf       `yaml:"auth"`
	Policy          string         `yaml:"policy"`
	Log             logging.Config `yaml:"log"`
	Limits          LimitsConf     `yaml:"limits"`
	BareLineEndings string         `yaml:"bare_line_endings"`
	DSN             string         `yaml:"dsn"`
	ShutdownGrace   time.Duration  `yaml:"shutdown_grace"`
	Admin           AdminConf      `yaml:"admin"`

	file string // the config file, absolute
}

// ListenerConf is one entry of listeners.
type ListenerConf struct {
	Pos        yamlx.Pos
	Name       string `yaml:"name"`
	Address    string `yaml:"address"`
	TLS        string `yaml:"tls"`
	RequireTLS bool   `yaml:"require_tls"`
	Auth       *bool  `yaml:"auth"`
	// ProxyProtocol takes HAProxy PROXY headers (v1, v2) from these
	// load balancers only.
	ProxyProtocol *ProxyProtocolConf `yaml:"proxy_protocol"`
	// GreetingDelay holds back the greeting; clients that talk first are
	// disconnected (for MX ports).
	GreetingDelay time.Duration `yaml:"greeting_delay"`
}

// ProxyProtocolConf is a listener's proxy_protocol section.
type ProxyProtocolConf struct {
	Pos           yamlx.Pos
	Trusted       []string      `yaml:"trusted"`
	HeaderTimeout time.Duration `yaml:"header_timeout"`

	trusted []netip.Prefix
}

// BackendConf is the backend section.
type BackendConf struct {
	Pos           yamlx.Pos
	Address       string        `yaml:"address"`
	TLS           string        `yaml:"tls"`
	Timeout       time.Duration `yaml:"timeout"`
	TLSServerName string        `yaml:"tls_server_name"`
	TLSCAFile     string        `yaml:"tls_ca_file"`
	TLSSkipVerify bool          `yaml:"tls_skip_verify"`
	PoolSize      *int          `yaml:"pool_size"`
	PoolIdle      time.Duration `yaml:"pool_idle"`
}

// LimitsConf is the limits section; zero means the default in proxy.DefaultLimits.
type LimitsConf struct {
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

// loadConfig reads, decodes and validates a config file. Relative paths in
// it are resolved against the file's folder. The error lists every problem
// as file:line: key: message.
func loadConfig(path string) (*Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	data, err := os.ReadFile(abs)
	if err != nil {
		return nil, err
	}
	var c Config
	if err := yamlx.Decode(path, data, &c); err != nil {
		return nil, err
	}
	c.file = abs
	if c.Pos.File == "" {
		c.Pos = yamlx.Pos{File: path, Line: 1}
	}
	if errs := c.validate(); len(errs) > 0 {
		return nil, errs
	}
	c.resolvePaths(filepath.Dir(abs))
	return &c, nil
}

func (c *Config) validate() yamlx.Errors {
	var errs yamlx.Errors
	add := func(p yamlx.Pos, key, format string, args ...any) {
		errs = append(errs, yamlx.Errorf(p, key, format, args...))
	}
	if c.Hostname == "" {
		add(c.Pos, "hostname", "is required: the name clients connect to (greeting, certificate, EHLO to the backend)")
	} else if !validHostname(c.Hostname) {
		add(c.Pos, "hostname", "%q is not a valid host name", c.Hostname)
	}
	if c.StateDir == "" {
		c.StateDir = "./state"
	}
	if len(c.Listeners) == 0 {
		add(c.Pos, "listeners", "at least one listener is required")
	}
	names, addrs := map[string]bool{}, map[string]bool{}
	needTLS := false
	for _, l := range c.Listeners {
		if l.Name == "" {
			add(l.Pos, "name", "is required")
		} else if names[l.Name] {
			add(l.Pos, "name", "%q is used by another listener", l.Name)
		}
		names[l.Name] = true
		if _, _, err := net.SplitHostPort(l.Address); err != nil {
			add(l.Pos, "address", "%q is not host:port", l.Address)
		} else if addrs[l.Address] {
			add(l.Pos, "address", "%q is used by another listener", l.Address)
		}
		addrs[l.Address] = true
		if pp := l.ProxyProtocol; pp != nil {
			if len(pp.Trusted) == 0 {
				add(pp.Pos, "trusted", "list the load balancers allowed to send PROXY headers (CIDRs)")
			}
			for i, cidr := range pp.Trusted {
				n, err := policy.ParseNetwork(cidr)
				if err != nil {
					add(pp.Pos, fmt.Sprintf("trusted[%d]", i), "%v", err)
					continue
				}
				pp.trusted = append(pp.trusted, n)
			}
		}
		switch proxy.TLSMode(l.TLS) {
		case proxy.TLSStartTLS:
			needTLS = true
		case proxy.TLSImplicit:
			needTLS = true
			if l.GreetingDelay > 0 {
				add(l.Pos, "greeting_delay", "has no effect with tls: implicit (the TLS handshake comes first)")
			}
		case proxy.TLSNone:
			if l.RequireTLS {
				add(l.Pos, "require_tls", "cannot be true on a listener with tls: none")
			}
		default:
			add(l.Pos, "tls", "%q is not one of implicit, starttls, none", l.TLS)
		}
	}
	if needTLS {
		// self_signed is the fallback for when no certificate files are
		// listed, so a config may set both.
		if len(c.TLS.Certificates) > 0 {
			c.TLS.SelfSigned = false
		}
		// An absent tls: section still names the file, so its errors say
		// where to add it (testdata/fuzz/FuzzLoadConfig/c23b5f18e52a4fa7).
		c.TLS.Pos = c.section(c.TLS.Pos, "tls")
		if err := c.TLS.Validate(); err != nil {
			errs = append(errs, asErrors(err, c.Pos, "tls")...)
		}
	}
	b := &c.Backend
	b.Pos = c.section(b.Pos, "backend")
	c.Auth.Pos = c.section(c.Auth.Pos, "auth")
	c.Limits.Pos = c.section(c.Limits.Pos, "limits")
	if b.Address == "" {
		add(b.Pos, "address", "is required: host:port of the legacy mail server")
	} else if _, _, err := net.SplitHostPort(b.Address); err != nil {
		add(b.Pos, "address", "%q is not host:port", b.Address)
	}
	if b.TLS == "" {
		b.TLS = string(proxy.TLSNone)
	}
	switch proxy.TLSMode(b.TLS) {
	case proxy.TLSNone, proxy.TLSStartTLS, proxy.TLSImplicit:
	default:
		add(b.Pos, "tls", "%q is not one of none, starttls, implicit", b.TLS)
	}
	if b.Timeout == 0 {
		b.Timeout = 30 * time.Second
	}
	if b.PoolSize != nil && *b.PoolSize < 0 {
		add(b.Pos, "pool_size", "must not be negative (0: no reuse of backend connections across sessions)")
	}
	switch {
	case b.PoolIdle < 0:
		add(b.Pos, "pool_idle", "must not be negative")
	case b.PoolIdle >= 5*time.Minute:
		add(b.Pos, "pool_idle", "must be under 5m: a server may drop a connection idle for 5 minutes (RFC 5321 4.5.3.2.7)")
	case b.PoolIdle == 0:
		b.PoolIdle = proxy.DefaultPoolIdle
	}
	errs = append(errs, c.Auth.validate()...)
	if c.Policy == "" {
		add(c.Pos, "policy", "is required: the relay policy file (see policies/default.yaml)")
	}
	if err := c.Log.Validate(); err != nil {
		add(c.Pos, "log", "%v", err)
	}
	switch proxy.BareLineEndings(c.BareLineEndings) {
	case "", proxy.BareNormalize, proxy.BareReject:
	default:
		add(c.Pos, "bare_line_endings", "%q is not one of normalize, reject", c.BareLineEndings)
	}
	switch proxy.DSNMode(c.DSN) {
	case "":
		c.DSN = string(proxy.DSNAuthenticated)
	case proxy.DSNAuthenticated, proxy.DSNAll, proxy.DSNNone:
	default:
		add(c.Pos, "dsn", "%q is not one of authenticated, all, none", c.DSN)
	}
	if a := c.Admin.Address; a != "" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			add(c.Pos, "admin.address", "%q is not host:port", a)
		}
	}
	if c.ShutdownGrace == 0 {
		c.ShutdownGrace = 30 * time.Second
	}
	for _, f := range []struct {
		key string
		v   int
	}{{"max_recipients", c.Limits.MaxRecipients}, {"max_line_length", c.Limits.MaxLineLength}, {"max_sessions", c.Limits.MaxSessions},
		{"max_sessions_per_ip", c.Limits.MaxSessionsPerIP}, {"auth_max_failures", c.Limits.AuthMaxFailures},
		{"auth_user_max_failures", c.Limits.AuthUserMaxFailures}, {"auth_max_concurrent", c.Limits.AuthMaxConcurrent}} {
		if f.v < 0 {
			add(c.Limits.Pos, f.key, "must not be negative")
		}
	}
	if l := c.Limits.MaxLineLength; l != 0 && l < 1000 {
		add(c.Limits.Pos, "max_line_length", "must be at least 1000 (RFC 5321 4.5.3.1.6)")
	}
	return errs
}

// section returns p, or for a section absent from the file, a position at
// the top of the file named by key.
func (c *Config) section(p yamlx.Pos, key string) yamlx.Pos {
	if p.File != "" {
		return p
	}
	return yamlx.Pos{File: c.Pos.File, Line: c.Pos.Line, Key: key}
}

// asErrors turns a sub-validator's error into positioned errors.
func asErrors(err error, p yamlx.Pos, key string) yamlx.Errors {
	switch e := err.(type) {
	case yamlx.Errors:
		return e
	case *yamlx.Error:
		return yamlx.Errors{e}
	}
	return yamlx.Errors{yamlx.Errorf(p, key, "%v", err)}
}

func validHostname(h string) bool {
	if len(h) > 253 || strings.HasSuffix(h, ".") {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-') {
				return false
			}
		}
	}
	return true
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
	c.TLS.ResolvePaths(dir)
}

// limits converts the limits section for the proxy.
func (c *Config) limits() proxy.Limits {
	l := c.Limits
	return proxy.Limits{
		MaxMessageBytes:  int64(l.MaxMessageSize),
		MaxRecipients:    l.MaxRecipients,
		MaxLineLength:    l.MaxLineLength,
		MaxSessions:      l.MaxSessions,
		MaxSessionsPerIP: l.MaxSessionsPerIP,
		CommandTimeout:   l.CommandTimeout,
		DataTimeout:      l.DataTimeout,
		WriteTimeout:     l.WriteTimeout,
		HandshakeTimeout: l.HandshakeTimeout,
		AuthFailDelay:    l.AuthFailDelay,
		AuthMaxFailures:  l.AuthMaxFailures,
		AuthFailWindow:   l.AuthFailWindow,

		AuthUserMaxFailures: l.AuthUserMaxFailures,
		AuthRemember:        l.AuthRemember,
		AuthMaxConcurrent:   l.AuthMaxConcurrent,
	}
}

// listeners converts the listeners section for the proxy. AUTH is on unless
// a listener says auth: false.
func (c *Config) listeners() []proxy.ListenerConfig {
	out := make([]proxy.ListenerConfig, len(c.Listeners))
	for i, l := range c.Listeners {
		out[i] = proxy.ListenerConfig{Name: l.Name, Address: l.Address, TLS: proxy.TLSMode(l.TLS),
			RequireTLS: l.RequireTLS, Auth: l.Auth == nil || *l.Auth, GreetingDelay: l.GreetingDelay}
		if pp := l.ProxyProtocol; pp != nil {
			out[i].ProxyProtocol = &proxy.ProxyProtocol{Trusted: pp.trusted, HeaderTimeout: pp.HeaderTimeout}
		}
	}
	return out
}

// needsTLS reports whether any listener uses TLS.
func (c *Config) needsTLS() bool {
	for _, l := range c.Listeners {
		if l.TLS != string(proxy.TLSNone) {
			return true
		}
	}
	return false
}

// keepRestartOnly copies from running the sections that cannot change while
// tlsguard runs (they shape the listeners' TLS, the backend leg, the limits
// and the logger), and returns the names of those that differ. The rest of
// c (listeners, policy, auth, shutdown_grace) applies on reload.
func (c *Config) keepRestartOnly(running *Config) []string {
	var changed []string
	keep := func(name string, differs bool, restore func()) {
		if differs {
			changed = append(changed, name)
			restore()
		}
	}
	keep("hostname", c.Hostname != running.Hostname, func() { c.Hostname = running.Hostname })
	keep("state_dir", c.StateDir != running.StateDir, func() { c.StateDir = running.StateDir })
	keep("tls", !equalIgnoringPos(c.TLS, running.TLS) || c.needsTLS() != running.needsTLS(), func() { c.TLS = running.TLS })
	keep("backend", !equalIgnoringPos(c.Backend, running.Backend), func() { c.Backend = running.Backend })
	keep("limits", c.limits() != running.limits(), func() { c.Limits = running.Limits })
	keep("log", c.Log != running.Log, func() { c.Log = running.Log })
	keep("bare_line_endings", c.BareLineEndings != running.BareLineEndings, func() { c.BareLineEndings = running.BareLineEndings })
	keep("dsn", c.DSN != running.DSN, func() { c.DSN = running.DSN })
	keep("admin", c.Admin != running.Admin, func() { c.Admin = running.Admin })
	if c.needsTLS() && !running.needsTLS() {
		// A TLS listener needs the certificates that were never loaded.
		c.Listeners = running.Listeners
		changed = append(changed, "listeners (a first TLS listener)")
	}
	return changed
}

var posType = reflect.TypeFor[yamlx.Pos]()

// equalIgnoringPos compares two config values, ignoring where in the file
// they were written (yamlx.Pos fields) and unexported fields.
func equalIgnoringPos(a, b any) bool {
	return equalValues(reflect.ValueOf(a), reflect.ValueOf(b))
}

func equalValues(a, b reflect.Value) bool {
	if a.Type() != b.Type() {
		return false
	}
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			return a.IsNil() == b.IsNil()
		}
		return equalValues(a.Elem(), b.Elem())
	case reflect.Struct:
		for i := 0; i < a.NumField(); i++ {
			f := a.Type().Field(i)
			if f.Type == posType || !f.IsExported() {
				continue
			}
			if !equalValues(a.Field(i), b.Field(i)) {
				return false
			}
		}
		return true
	case reflect.Slice:
		if a.Len() != b.Len() {
			return false
		}
		for i := 0; i < a.Len(); i++ {
			if !equalValues(a.Index(i), b.Index(i)) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a.Interface(), b.Interface())
}
