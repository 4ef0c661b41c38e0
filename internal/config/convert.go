package config

import (
	"net/netip"
	"reflect"

	"github.com/tlsguard/tlsguard/internal/mailbox"
	"github.com/tlsguard/tlsguard/internal/yamlx"
	"github.com/tlsguard/tlsguard/logging"
	"github.com/tlsguard/tlsguard/policy"
	"github.com/tlsguard/tlsguard/proxy"
)

// ProxyLimits is the limits section for the proxy.
func (c *Config) ProxyLimits() proxy.Limits {
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

// ProxyListeners is the listeners section for the proxy.
func (c *Config) ProxyListeners() []proxy.ListenerConfig {
	out := make([]proxy.ListenerConfig, len(c.Listeners))
	for i, l := range c.Listeners {
		out[i] = proxy.ListenerConfig{Name: l.Name, Address: l.Address, TLS: proxy.TLSMode(l.TLS), Protocol: proxy.Protocol(l.Protocol),
			RequireTLS: l.RequireTLS, Auth: *l.Auth, GreetingDelay: l.GreetingDelay, MaxSessions: l.MaxSessions}
		if pp := l.ProxyProtocol; pp != nil {
			out[i].ProxyProtocol = &proxy.ProxyProtocol{Trusted: pp.trusted(), HeaderTimeout: pp.HeaderTimeout}
		}
	}
	return out
}

// trusted parses the CIDRs that Validate has checked.
func (pp *ProxyProtocol) trusted() []netip.Prefix {
	var out []netip.Prefix
	for _, cidr := range pp.Trusted {
		if n, err := policy.ParseNetwork(cidr); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// ProxyBackend is the backend section for the proxy, without the TLS client
// configuration (which needs the CA file read: the caller's job).
func (c *Config) ProxyBackend() proxy.BackendConfig {
	b := c.Backend
	return proxy.BackendConfig{Address: b.Address, TLS: proxy.TLSMode(b.TLS), Timeout: b.Timeout,
		DataDoneTimeout: b.DataDoneTimeout, PoolSize: *b.PoolSize, PoolIdle: b.PoolIdle,
		MaxConnections: *b.MaxConnections, ReservedAuthenticated: *b.ReservedAuthenticated, SpoolAfter: b.SpoolAfter}
}

// ProxyMailbox is the mailbox_backend section for the proxy, without the
// TLS client configuration (the caller's, as for ProxyBackend).
func (c *Config) ProxyMailbox() mailbox.BackendConfig {
	m := c.MailboxBackend
	return mailbox.BackendConfig{IMAP: m.IMAP, POP3: m.POP3, TLS: m.TLS, Timeout: m.Timeout}
}

// LogConfig is the log section for the logger.
func (c *Config) LogConfig() logging.Config {
	return logging.Config{Level: c.Log.Level, Format: c.Log.Format}
}

// KeepRestartOnly copies from running the sections that cannot change while
// tlsguard runs (they shape the listeners' TLS, the backend leg, the limits
// and the log format), and returns the names of those that differ. The rest of
// c (listeners, policy, auth, shutdown_grace) applies on reload.
func (c *Config) KeepRestartOnly(running *Config) []string {
	var changed []string
	keep := func(name string, differs bool, restore func()) {
		if differs {
			changed = append(changed, name)
			restore()
		}
	}
	keep("hostname", c.Hostname != running.Hostname, func() { c.Hostname = running.Hostname })
	keep("state_dir", c.StateDir != running.StateDir, func() { c.StateDir = running.StateDir })
	keep("tls", !equalIgnoringPos(c.TLS, running.TLS) || c.NeedsTLS() != running.NeedsTLS(), func() { c.TLS = running.TLS })
	keep("backend", !equalIgnoringPos(c.Backend, running.Backend), func() { c.Backend = running.Backend })
	keep("mailbox_backend", !equalIgnoringPos(c.MailboxBackend, running.MailboxBackend), func() { c.MailboxBackend = running.MailboxBackend })
	keep("limits", c.ProxyLimits() != running.ProxyLimits(), func() { c.Limits = running.Limits })
	// The level applies on reload (the logger's level is atomic); the
	// encoder is built once.
	keep("log.format", c.Log.Format != running.Log.Format, func() { c.Log.Format = running.Log.Format })
	keep("bare_line_endings", c.BareLineEndings != running.BareLineEndings, func() { c.BareLineEndings = running.BareLineEndings })
	// DSN changes what EHLO advertises, fixed per listener at start.
	keep("dsn", c.DSN != running.DSN, func() { c.DSN = running.DSN })
	keep("admin", c.Admin != running.Admin, func() { c.Admin = running.Admin })
	keep("cluster", !equalIgnoringPos(c.Cluster, running.Cluster), func() { c.Cluster = running.Cluster })
	if c.NeedsTLS() && !running.NeedsTLS() {
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
