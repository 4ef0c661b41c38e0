package config

import (
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/tlsguard/tlsguard/internal/yamlx"
	"github.com/tlsguard/tlsguard/logging"
	"github.com/tlsguard/tlsguard/policy"
	"github.com/tlsguard/tlsguard/proxy"
)

// Validate reports every problem in c as file:line: key: message. It
// changes nothing: defaults are filled in before, by Load.
func (c *Config) Validate() yamlx.Errors {
	var errs yamlx.Errors
	for _, check := range []func() yamlx.Errors{
		c.validateHostname, c.validateListeners, c.validateTLS, c.validateBackend, c.validateMailboxBackend,
		c.validateAuth, c.validateTop, c.validateLimits, c.validateCluster,
	} {
		errs = append(errs, check()...)
	}
	return errs
}

func (c *Config) validateHostname() yamlx.Errors {
	switch {
	case c.Hostname == "":
		return yamlx.Errors{yamlx.Errorf(c.Pos, "hostname", "is required: the name clients connect to (greeting, certificate, EHLO to the backend)")}
	case !validHostname(c.Hostname):
		return yamlx.Errors{yamlx.Errorf(c.Pos, "hostname", "%q is not a valid host name", c.Hostname)}
	}
	return nil
}

func (c *Config) validateListeners() yamlx.Errors {
	var errs yamlx.Errors
	if len(c.Listeners) == 0 {
		errs = append(errs, yamlx.Errorf(c.Pos, "listeners", "at least one listener is required"))
	}
	names, addrs := map[string]bool{}, map[string]bool{}
	for i := range c.Listeners {
		errs = append(errs, c.Listeners[i].validate(names, addrs, c.Limits.MaxSessions)...)
	}
	return errs
}

// validate checks one listener; names and addrs collect those of the
// listeners before it, which must differ; maxSessions is limits.max_sessions,
// which bounds all listeners together.
func (l *Listener) validate(names, addrs map[string]bool, maxSessions int) yamlx.Errors {
	var errs yamlx.Errors
	add := func(key, format string, args ...any) { errs = append(errs, yamlx.Errorf(l.Pos, key, format, args...)) }
	if l.Name == "" {
		add("name", "is required")
	} else if names[l.Name] {
		add("name", "%q is used by another listener", l.Name)
	}
	names[l.Name] = true
	if _, _, err := net.SplitHostPort(l.Address); err != nil {
		add("address", "%q is not host:port", l.Address)
	} else if addrs[l.Address] {
		add("address", "%q is used by another listener", l.Address)
	}
	addrs[l.Address] = true
	if l.ProxyProtocol != nil {
		errs = append(errs, l.ProxyProtocol.validate()...)
	}
	switch proxy.TLSMode(l.TLS) {
	case proxy.TLSStartTLS:
	case proxy.TLSImplicit:
		if l.GreetingDelay > 0 {
			add("greeting_delay", "has no effect with tls: implicit (the TLS handshake comes first)")
		}
	case proxy.TLSNone:
		if l.RequireTLS {
			add("require_tls", "cannot be true on a listener with tls: none")
		}
	default:
		add("tls", "%q is not one of implicit, starttls, none", l.TLS)
	}
	switch p := proxy.Protocol(l.Protocol); p {
	case proxy.ProtocolSMTP:
	case proxy.ProtocolIMAP, proxy.ProtocolPOP3:
		if proxy.TLSMode(l.TLS) == proxy.TLSNone {
			add("tls", "must be implicit or starttls with protocol: %s (logins are refused before TLS, so a plaintext listener could log nobody in)", p)
		}
		if l.RequireTLS {
			add("require_tls", "applies to smtp listeners only (%s always refuses logins before TLS)", p)
		}
		if l.GreetingDelay > 0 {
			add("greeting_delay", "applies to smtp listeners only")
		}
		if l.Auth != nil && !*l.Auth {
			add("auth", "cannot be false with protocol: %s (the listener exists to log users in)", p)
		}
	default:
		add("protocol", "%q is not one of smtp, imap, pop3", l.Protocol)
	}
	switch {
	case l.MaxSessions < 0:
		add("max_sessions", "must not be negative")
	case l.MaxSessions > maxSessions:
		add("max_sessions", "%d is more than limits.max_sessions (%d), which bounds all listeners together", l.MaxSessions, maxSessions)
	}
	return errs
}

func (pp *ProxyProtocol) validate() yamlx.Errors {
	var errs yamlx.Errors
	if len(pp.Trusted) == 0 {
		errs = append(errs, yamlx.Errorf(pp.Pos, "trusted", "list the load balancers allowed to send PROXY headers (CIDRs)"))
	}
	for i, cidr := range pp.Trusted {
		if _, err := policy.ParseNetwork(cidr); err != nil {
			errs = append(errs, yamlx.Errorf(pp.Pos, fmt.Sprintf("trusted[%d]", i), "%v", err))
		}
	}
	return errs
}

// validateTLS checks the tls section only when a listener uses it.
func (c *Config) validateTLS() yamlx.Errors {
	if !c.NeedsTLS() {
		return nil
	}
	err := c.TLS.Validate()
	switch e := err.(type) {
	case nil:
		return nil
	case yamlx.Errors:
		return e
	case *yamlx.Error:
		return yamlx.Errors{e}
	}
	return yamlx.Errors{yamlx.Errorf(c.Pos, "tls", "%v", err)}
}

func (c *Config) validateBackend() yamlx.Errors {
	var errs yamlx.Errors
	b := &c.Backend
	add := func(key, format string, args ...any) { errs = append(errs, yamlx.Errorf(b.Pos, key, format, args...)) }
	if b.Address == "" {
		add("address", "is required: host:port of the legacy mail server")
	} else if _, _, err := net.SplitHostPort(b.Address); err != nil {
		add("address", "%q is not host:port", b.Address)
	}
	switch proxy.TLSMode(b.TLS) {
	case proxy.TLSNone, proxy.TLSStartTLS, proxy.TLSImplicit:
	default:
		add("tls", "%q is not one of none, starttls, implicit", b.TLS)
	}
	if b.PoolSize != nil && *b.PoolSize < 0 {
		add("pool_size", "must not be negative (0: no reuse of backend connections across sessions)")
	}
	if b.DataDoneTimeout < b.Timeout {
		add("data_done_timeout", "must not be shorter than backend.timeout (%v): the reply to the final dot may take longer than any other (RFC 5321 4.5.3.2.6 allows 10m)", b.Timeout)
	}
	if m := *b.MaxConnections; m < 1 {
		add("max_connections", "must be at least 1")
	} else if r := *b.ReservedAuthenticated; r < 0 || r >= m {
		add("reserved_authenticated", "must be from 0 to max_connections-1 (%d): unauthenticated sessions need at least one connection", m-1)
	}
	if b.SpoolAfter < 0 {
		add("spool_after", "must not be negative")
	}
	switch {
	case b.PoolIdle < 0:
		add("pool_idle", "must not be negative")
	case b.PoolIdle >= 5*time.Minute:
		add("pool_idle", "must be under 5m: a server may drop a connection idle for 5 minutes (RFC 5321 4.5.3.2.7)")
	}
	return errs
}

// validateMailboxBackend checks mailbox_backend; the address of a protocol
// is required when a listener speaks it.
func (c *Config) validateMailboxBackend() yamlx.Errors {
	var errs yamlx.Errors
	m := &c.MailboxBackend
	add := func(key, format string, args ...any) { errs = append(errs, yamlx.Errorf(m.Pos, key, format, args...)) }
	used := map[proxy.Protocol]bool{}
	for _, l := range c.Listeners {
		used[proxy.Protocol(l.Protocol)] = true
	}
	for _, a := range []struct {
		key, addr string
		p         proxy.Protocol
	}{{"imap", m.IMAP, proxy.ProtocolIMAP}, {"pop3", m.POP3, proxy.ProtocolPOP3}} {
		switch {
		case a.addr == "" && used[a.p]:
			add(a.key, "is required by the listeners with protocol: %s (host:port of the legacy %s server)", a.p, a.key)
		case a.addr != "":
			if _, _, err := net.SplitHostPort(a.addr); err != nil {
				add(a.key, "%q is not host:port", a.addr)
			}
		}
	}
	switch proxy.TLSMode(m.TLS) {
	case proxy.TLSNone, proxy.TLSStartTLS, proxy.TLSImplicit:
	default:
		add("tls", "%q is not one of none, starttls, implicit", m.TLS)
	}
	if m.Timeout <= 0 {
		add("timeout", "must be above zero")
	}
	return errs
}

func (c *Config) validateAuth() yamlx.Errors { return c.Auth.validate() }

// validateTop checks the keys at the top level of the file.
func (c *Config) validateTop() yamlx.Errors {
	var errs yamlx.Errors
	add := func(key, format string, args ...any) { errs = append(errs, yamlx.Errorf(c.Pos, key, format, args...)) }
	if c.Policy == "" {
		add("policy", "is required: the relay policy file (see policies/default.yaml)")
	}
	if err := logging.ValidLevel(c.Log.Level); err != nil {
		errs = append(errs, yamlx.Errorf(c.Log.Pos, "level", "%v", err))
	}
	if err := logging.ValidFormat(c.Log.Format); err != nil {
		errs = append(errs, yamlx.Errorf(c.Log.Pos, "format", "%v", err))
	}
	switch proxy.BareLineEndings(c.BareLineEndings) {
	case proxy.BareNormalize, proxy.BareReject:
	default:
		add("bare_line_endings", "%q is not one of normalize, reject", c.BareLineEndings)
	}
	switch proxy.DSNMode(c.DSN) {
	case proxy.DSNAuthenticated, proxy.DSNAll, proxy.DSNNone:
	default:
		add("dsn", "%q is not one of authenticated, all, none", c.DSN)
	}
	if a := c.Admin.Address; a != "" {
		if _, _, err := net.SplitHostPort(a); err != nil {
			add("admin.address", "%q is not host:port", a)
		}
	}
	return errs
}

func (c *Config) validateLimits() yamlx.Errors {
	var errs yamlx.Errors
	l := &c.Limits
	for _, f := range []struct {
		key string
		v   int
	}{{"max_recipients", l.MaxRecipients}, {"max_line_length", l.MaxLineLength}, {"max_sessions", l.MaxSessions},
		{"max_sessions_per_ip", l.MaxSessionsPerIP}, {"auth_max_failures", l.AuthMaxFailures},
		{"auth_user_max_failures", l.AuthUserMaxFailures}, {"auth_max_concurrent", l.AuthMaxConcurrent}} {
		if f.v < 0 {
			errs = append(errs, yamlx.Errorf(l.Pos, f.key, "must not be negative"))
		}
	}
	if l.MaxLineLength < 1000 { // 0 was filled in: only a value written can be this
		errs = append(errs, yamlx.Errorf(l.Pos, "max_line_length", "must be at least 1000 (RFC 5321 4.5.3.1.6)"))
	}
	return errs
}

func (c *Config) validateCluster() yamlx.Errors {
	var errs yamlx.Errors
	cl, r := &c.Cluster, &c.Cluster.Redis
	add := func(pos yamlx.Pos, key, format string, args ...any) {
		errs = append(errs, yamlx.Errorf(pos, key, format, args...))
	}
	seen := map[string]bool{}
	for _, s := range cl.Share {
		switch s {
		case ShareCertificates, ShareAuthThrottle, ShareRateLimits, ShareSessionTickets:
		default:
			add(cl.Pos, "share", "%q is not one of certificates, auth_throttle, rate_limits, session_tickets", s)
		}
		if seen[s] {
			add(cl.Pos, "share", "%q is listed twice", s)
		}
		seen[s] = true
	}
	if !cl.On() {
		return errs
	}
	if r.Address != "" && r.Sentinel != nil {
		add(r.Pos, "address", "and sentinel are exclusive: one Redis, or the sentinels that find it")
	}
	if r.Address != "" {
		if _, _, err := net.SplitHostPort(r.Address); err != nil {
			add(r.Pos, "address", "%q is not host:port", r.Address)
		}
	}
	if s := r.Sentinel; s != nil {
		if s.Master == "" {
			add(s.Pos, "master", "is required: the name the sentinels monitor")
		}
		if len(s.Addresses) == 0 {
			add(s.Pos, "addresses", "at least one sentinel host:port is required")
		}
		for _, a := range s.Addresses {
			if _, _, err := net.SplitHostPort(a); err != nil {
				add(s.Pos, "addresses", "%q is not host:port", a)
			}
		}
	}
	if r.Timeout <= 0 {
		add(r.Pos, "timeout", "must be above zero")
	}
	if r.CAFile != "" && !r.TLS {
		add(r.Pos, "ca_file", "needs tls: true")
	}
	if cl.KeyFile == "" && (seen[ShareCertificates] || seen[ShareSessionTickets]) {
		add(cl.Pos, "key_file", "is required to share certificates or session_tickets: it encrypts their keys in Redis")
	}
	return errs
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
