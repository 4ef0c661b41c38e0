package main

// The auth section, self-contained (types, validation, building the
// sources) so that it can move with the rest of the config.

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/tlsguard/tlsguard/internal/auth"
	"github.com/tlsguard/tlsguard/internal/yamlx"
	"github.com/tlsguard/tlsguard/proxy"
)

// AuthConf is the auth section: where credentials are checked. users_file
// and backend: true are shorthands for a one-source list.
type AuthConf struct {
	Pos       yamlx.Pos
	UsersFile string           `yaml:"users_file"`
	Backend   bool             `yaml:"backend"`
	Sources   []AuthSourceConf `yaml:"sources"`
	Cache     AuthCacheConf    `yaml:"cache"`
}

// AuthSourceConf is one entry of auth.sources: exactly one key.
type AuthSourceConf struct {
	Pos      yamlx.Pos
	LDAP     *LDAPConf     `yaml:"ldap"`
	IMAP     *MailboxConf  `yaml:"imap"`
	POP3     *MailboxConf  `yaml:"pop3"`
	Dovecot  *DovecotConf  `yaml:"dovecot"`
	Htpasswd *HtpasswdConf `yaml:"htpasswd"`
	Backend  *bool         `yaml:"backend"`

	name string // for logs and metrics: the kind, numbered when repeated
}

// LDAPConf is an ldap source.
type LDAPConf struct {
	Pos                yamlx.Pos
	Name               string        `yaml:"name"`
	URL                string        `yaml:"url"`
	StartTLS           bool          `yaml:"start_tls"`
	CAFile             string        `yaml:"ca_file"`
	TLSServerName      string        `yaml:"tls_server_name"`
	BindDN             string        `yaml:"bind_dn"`
	BindPasswordFile   string        `yaml:"bind_password_file"`
	BaseDN             string        `yaml:"base_dn"`
	Filter             string        `yaml:"filter"`
	BindTemplate       string        `yaml:"bind_template"`
	AddressesAttribute string        `yaml:"addresses_attribute"`
	GroupsAttribute    string        `yaml:"groups_attribute"`
	Timeout            time.Duration `yaml:"timeout"`
	PoolSize           int           `yaml:"pool_size"`
}

// MailboxConf is an imap or pop3 source.
type MailboxConf struct {
	Pos           yamlx.Pos
	Name          string        `yaml:"name"`
	Address       string        `yaml:"address"`
	TLS           string        `yaml:"tls"`
	CAFile        string        `yaml:"ca_file"`
	TLSServerName string        `yaml:"tls_server_name"`
	Timeout       time.Duration `yaml:"timeout"`
}

// DovecotConf is a dovecot source.
type DovecotConf struct {
	Pos      yamlx.Pos
	Name     string        `yaml:"name"`
	Socket   string        `yaml:"socket"`
	Address  string        `yaml:"address"`
	Service  string        `yaml:"service"`
	Timeout  time.Duration `yaml:"timeout"`
	PoolSize int           `yaml:"pool_size"`
}

// HtpasswdConf is an htpasswd source.
type HtpasswdConf struct {
	Pos  yamlx.Pos
	Name string `yaml:"name"`
	File string `yaml:"file"`
}

// AuthCacheConf is auth.cache.
type AuthCacheConf struct {
	Pos         yamlx.Pos
	TTL         *time.Duration `yaml:"ttl"`
	NegativeTTL time.Duration  `yaml:"negative_ttl"`
	MaxEntries  int            `yaml:"max_entries"`
}

// Defaults of auth.cache.
const (
	defaultAuthCacheTTL        = 60 * time.Second
	defaultAuthCacheMaxEntries = 10000
	defaultAuthSourceTimeout   = 5 * time.Second
)

// validate checks the auth section and names each source; errors are
// file:line: key: message.
func (a *AuthConf) validate() yamlx.Errors {
	var errs yamlx.Errors
	add := func(p yamlx.Pos, key, format string, args ...any) {
		errs = append(errs, yamlx.Errorf(p, key, format, args...))
	}
	shorthands := 0
	if a.UsersFile != "" {
		shorthands++
	}
	if a.Backend {
		shorthands++
	}
	if shorthands == 2 {
		add(a.Pos, "backend", "choose one: users_file or backend: true (or list both under sources)")
	}
	if shorthands > 0 && len(a.Sources) > 0 {
		add(a.Pos, "sources", "cannot be combined with users_file or backend: true; list them as sources")
	}
	names := map[string]int{}
	for i := range a.Sources {
		s := &a.Sources[i]
		if s.Pos.File == "" { // not a mapping: yamlx has said so
			s.Pos = yamlx.Pos{File: a.Pos.File, Line: a.Pos.LineOf("sources"), Key: fmt.Sprintf("auth.sources[%d]", i)}
		}
		kinds := []string{}
		var name string
		if s.LDAP != nil {
			kinds, name = append(kinds, "ldap"), s.LDAP.Name
			errs = append(errs, s.LDAP.validate()...)
		}
		if s.IMAP != nil {
			kinds, name = append(kinds, "imap"), s.IMAP.Name
			errs = append(errs, s.IMAP.validate()...)
		}
		if s.POP3 != nil {
			kinds, name = append(kinds, "pop3"), s.POP3.Name
			errs = append(errs, s.POP3.validate()...)
		}
		if s.Dovecot != nil {
			kinds, name = append(kinds, "dovecot"), s.Dovecot.Name
			errs = append(errs, s.Dovecot.validate()...)
		}
		if s.Htpasswd != nil {
			kinds, name = append(kinds, "htpasswd"), s.Htpasswd.Name
			if s.Htpasswd.File == "" {
				add(s.Htpasswd.Pos, "file", "is required: the htpasswd file (bcrypt hashes)")
			}
		}
		if s.Backend != nil {
			kinds = append(kinds, "backend")
			if !*s.Backend {
				add(s.Pos, "backend", "only backend: true makes sense in a source list")
			}
		}
		switch len(kinds) {
		case 0:
			add(s.Pos, "", "name one source: ldap, imap, pop3, dovecot, htpasswd or backend")
			continue
		case 1:
		default:
			add(s.Pos, "", "one source per entry, found %s", strings.Join(kinds, " and "))
			continue
		}
		if name == "" {
			name = kinds[0]
		} else if !validSourceName(name) {
			add(s.Pos, kinds[0]+".name", "%q: use letters, digits, '.', '_' and '-' only (at most 64); it is a metrics label", name)
		}
		if n := names[name]; n > 0 {
			add(s.Pos, "", "source name %q is used twice; give one a name: key", name)
		}
		names[name]++
		s.name = name
	}
	c := &a.Cache
	if c.Pos.File == "" {
		c.Pos = yamlx.Pos{File: a.Pos.File, Line: a.Pos.Line, Key: "auth.cache"}
	}
	if c.TTL != nil && *c.TTL < 0 {
		add(c.Pos, "ttl", "must not be negative (0 turns the cache off)")
	}
	if c.NegativeTTL < 0 {
		add(c.Pos, "negative_ttl", "must not be negative")
	}
	if c.MaxEntries < 0 {
		add(c.Pos, "max_entries", "must not be negative")
	}
	return errs
}

func (l *LDAPConf) validate() yamlx.Errors {
	var errs yamlx.Errors
	add := func(key, format string, args ...any) { errs = append(errs, yamlx.Errorf(l.Pos, key, format, args...)) }
	u, err := url.Parse(l.URL)
	switch {
	case l.URL == "":
		add("url", "is required: ldap://host:port or ldaps://host:port")
	case err != nil || (u.Scheme != "ldap" && u.Scheme != "ldaps") || u.Host == "":
		add("url", "%q is not ldap://host:port or ldaps://host:port", l.URL)
	case u.Scheme == "ldaps" && l.StartTLS:
		add("start_tls", "is for ldap:// URLs; ldaps:// is TLS already")
	case u.Scheme == "ldap" && !l.StartTLS && !isLoopbackHost(u.Hostname()):
		add("start_tls", "ldap:// to %s would send passwords in the clear: use ldaps:// or start_tls: true", u.Hostname())
	}
	if l.BindTemplate != "" {
		if !strings.Contains(l.BindTemplate, "{user}") {
			add("bind_template", "must contain {user}")
		}
		if l.Filter != "" || l.BaseDN != "" {
			add("bind_template", "replaces the search: leave base_dn and filter out")
		}
	} else {
		if l.BaseDN == "" {
			add("base_dn", "is required (or bind_template): where the users are")
		}
		if !strings.Contains(l.Filter, "{user}") {
			add("filter", "must contain {user}, e.g. \"(&(objectClass=inetOrgPerson)(uid={user}))\"")
		} else if !strings.HasPrefix(l.Filter, "(") || !strings.HasSuffix(l.Filter, ")") {
			add("filter", "%q is not an LDAP filter in parentheses", l.Filter)
		}
	}
	if (l.BindDN == "") != (l.BindPasswordFile == "") {
		add("bind_password_file", "bind_dn and bind_password_file go together (neither: anonymous search)")
	}
	if l.Timeout < 0 {
		add("timeout", "must not be negative")
	}
	if l.PoolSize < 0 {
		add("pool_size", "must not be negative")
	}
	return errs
}

func (m *MailboxConf) validate() yamlx.Errors {
	var errs yamlx.Errors
	add := func(key, format string, args ...any) { errs = append(errs, yamlx.Errorf(m.Pos, key, format, args...)) }
	host, _, err := net.SplitHostPort(m.Address)
	if err != nil {
		add("address", "%q is not host:port", m.Address)
	}
	if m.TLS == "" {
		m.TLS = "starttls"
	}
	switch m.TLS {
	case "starttls", "implicit":
	case "none":
		if err == nil && !isLoopbackHost(host) {
			add("tls", "none to %s would send passwords in the clear: use starttls or implicit", host)
		}
	default:
		add("tls", "%q is not one of none, starttls, implicit", m.TLS)
	}
	if m.Timeout < 0 {
		add("timeout", "must not be negative")
	}
	return errs
}

func (d *DovecotConf) validate() yamlx.Errors {
	var errs yamlx.Errors
	add := func(key, format string, args ...any) { errs = append(errs, yamlx.Errorf(d.Pos, key, format, args...)) }
	switch {
	case (d.Socket == "") == (d.Address == ""):
		add("socket", "give one of socket (a UNIX socket path) or address (host:port)")
	case d.Address != "":
		if host, _, err := net.SplitHostPort(d.Address); err != nil {
			add("address", "%q is not host:port", d.Address)
		} else if !isLoopbackHost(host) {
			add("address", "%s: Dovecot's auth protocol has no TLS; use a UNIX socket or loopback", host)
		}
	}
	if d.Timeout < 0 {
		add("timeout", "must not be negative")
	}
	if d.PoolSize < 0 {
		add("pool_size", "must not be negative")
	}
	return errs
}

func validSourceName(n string) bool {
	if len(n) > 64 {
		return false
	}
	for _, r := range n {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// resolvePaths makes the section's file paths absolute.
func (a *AuthConf) resolvePaths(abs func(*string)) {
	abs(&a.UsersFile)
	for i := range a.Sources {
		s := &a.Sources[i]
		if s.LDAP != nil {
			abs(&s.LDAP.CAFile)
			abs(&s.LDAP.BindPasswordFile)
		}
		for _, m := range []*MailboxConf{s.IMAP, s.POP3} {
			if m != nil {
				abs(&m.CAFile)
			}
		}
		if s.Dovecot != nil {
			abs(&s.Dovecot.Socket)
		}
		if s.Htpasswd != nil {
			abs(&s.Htpasswd.File)
		}
	}
}

// cache returns the cache settings with defaults filled.
func (a *AuthConf) cache() auth.CacheConfig {
	c := auth.CacheConfig{TTL: defaultAuthCacheTTL, NegativeTTL: a.Cache.NegativeTTL, MaxEntries: a.Cache.MaxEntries}
	if a.Cache.TTL != nil {
		c.TTL = *a.Cache.TTL
	}
	if c.MaxEntries == 0 {
		c.MaxEntries = defaultAuthCacheMaxEntries
	}
	return c
}

// authBuild is what building sources needs from the rest of the config.
type authBuild struct {
	backend  func() (proxy.BackendConfig, error)
	hostname string
	obs      auth.Observer
	info     func(msg string, kv ...any)
}

// build makes the chain, each source that asks a server behind a cache of
// its own, or nil when no source is
// configured. Files (htpasswd, bind passwords, CAs) are read now, so a
// reload picks up their changes.
func (a *AuthConf) build(b authBuild) (auth.Source, *auth.Chain, error) {
	srcs := a.Sources
	switch {
	case a.UsersFile != "":
		srcs = []AuthSourceConf{{Htpasswd: &HtpasswdConf{File: a.UsersFile}, name: "htpasswd"}}
	case a.Backend:
		t := true
		srcs = []AuthSourceConf{{Backend: &t, name: "backend"}}
	}
	if len(srcs) == 0 {
		return nil, nil, nil
	}
	var named []auth.Named
	for i, s := range srcs {
		src, err := s.build(b)
		if err != nil {
			if a.UsersFile != "" {
				return nil, nil, fmt.Errorf("auth.users_file: %w", err)
			}
			return nil, nil, fmt.Errorf("auth.sources[%d] (%s): %w", i, s.name, err)
		}
		if s.Htpasswd == nil {
			// An htpasswd file is in memory: caching it would only skip
			// the bcrypt cost the check slots are sized for.
			src = auth.NewCache(src, a.cache())
		}
		named = append(named, auth.Named{Name: s.name, Source: src})
	}
	chain := auth.NewChain(b.obs, named...)
	return chain, chain, nil
}

func (s *AuthSourceConf) build(b authBuild) (auth.Source, error) {
	switch {
	case s.LDAP != nil:
		l := s.LDAP
		cfg := auth.LDAPConfig{URL: l.URL, StartTLS: l.StartTLS, BindDN: l.BindDN, BaseDN: l.BaseDN, Filter: l.Filter,
			BindTemplate: l.BindTemplate, AddressesAttribute: l.AddressesAttribute, GroupsAttribute: l.GroupsAttribute,
			Timeout: l.Timeout, PoolSize: l.PoolSize}
		if cfg.Timeout == 0 {
			cfg.Timeout = defaultAuthSourceTimeout
		}
		u, _ := url.Parse(l.URL)
		tc, err := clientTLS(u.Hostname(), l.TLSServerName, l.CAFile)
		if err != nil {
			return nil, err
		}
		cfg.TLS = tc
		if l.BindPasswordFile != "" {
			pw, err := os.ReadFile(l.BindPasswordFile)
			if err != nil {
				return nil, fmt.Errorf("bind_password_file: %w", err)
			}
			cfg.BindPassword = strings.TrimRight(string(pw), "\r\n")
			if cfg.BindPassword == "" {
				return nil, fmt.Errorf("bind_password_file %s is empty (an empty password is an unauthenticated bind)", l.BindPasswordFile)
			}
		}
		return auth.NewLDAP(cfg), nil
	case s.IMAP != nil, s.POP3 != nil:
		m := s.IMAP
		if m == nil {
			m = s.POP3
		}
		host, _, _ := net.SplitHostPort(m.Address)
		tc, err := clientTLS(host, m.TLSServerName, m.CAFile)
		if err != nil {
			return nil, err
		}
		cfg := auth.MailboxConfig{Address: m.Address, TLS: m.TLS, TLSConfig: tc, Timeout: m.Timeout}
		if cfg.Timeout == 0 {
			cfg.Timeout = defaultAuthSourceTimeout
		}
		if s.IMAP != nil {
			return auth.NewIMAP(cfg), nil
		}
		return auth.NewPOP3(cfg), nil
	case s.Dovecot != nil:
		d := s.Dovecot
		cfg := auth.DovecotConfig{Network: "unix", Address: d.Socket, Service: d.Service, Timeout: d.Timeout, PoolSize: d.PoolSize}
		if d.Address != "" {
			cfg.Network, cfg.Address = "tcp", d.Address
		}
		if cfg.Timeout == 0 {
			cfg.Timeout = defaultAuthSourceTimeout
		}
		return auth.NewDovecot(cfg), nil
	case s.Htpasswd != nil:
		h, err := auth.LoadHtpasswd(s.Htpasswd.File)
		if err != nil {
			return nil, err
		}
		b.info("users loaded", "users_file", s.Htpasswd.File, "users", h.Users())
		return h, nil
	case s.Backend != nil:
		bc, err := b.backend()
		if err != nil {
			return nil, err
		}
		return proxy.NewBackendAuthenticator(bc, b.hostname), nil
	}
	return nil, fmt.Errorf("no source")
}

// clientTLS verifies a server by name, against caFile or the system roots.
func clientTLS(host, serverName, caFile string) (*tls.Config, error) {
	if serverName != "" {
		host = serverName
	}
	tc := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file: %s: no PEM certificate found", filepath.Base(caFile))
		}
		tc.RootCAs = pool
	}
	return tc, nil
}
