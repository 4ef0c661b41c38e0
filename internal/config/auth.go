package config

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"github.com/tlsguard/tlsguard/internal/yamlx"
)

// Auth is the auth section: where credentials are checked. users_file
// and backend: true are shorthands for a one-source list.
type Auth struct {
	Pos       yamlx.Pos
	UsersFile string       `yaml:"users_file"`
	Backend   bool         `yaml:"backend"`
	Sources   []AuthSource `yaml:"sources"`
	Cache     AuthCache    `yaml:"cache"`
}

// AuthSource is one entry of auth.sources: exactly one key.
type AuthSource struct {
	Pos      yamlx.Pos
	LDAP     *LDAP     `yaml:"ldap"`
	IMAP     *Mailbox  `yaml:"imap"`
	POP3     *Mailbox  `yaml:"pop3"`
	Dovecot  *Dovecot  `yaml:"dovecot"`
	Htpasswd *Htpasswd `yaml:"htpasswd"`
	Backend  *bool     `yaml:"backend"`
}

// LDAP is an ldap source.
type LDAP struct {
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

// Mailbox is an imap or pop3 source.
type Mailbox struct {
	Pos           yamlx.Pos
	Name          string        `yaml:"name"`
	Address       string        `yaml:"address"`
	TLS           string        `yaml:"tls"`
	CAFile        string        `yaml:"ca_file"`
	TLSServerName string        `yaml:"tls_server_name"`
	Timeout       time.Duration `yaml:"timeout"`
}

// Dovecot is a dovecot source.
type Dovecot struct {
	Pos      yamlx.Pos
	Name     string        `yaml:"name"`
	Socket   string        `yaml:"socket"`
	Address  string        `yaml:"address"`
	Service  string        `yaml:"service"`
	Timeout  time.Duration `yaml:"timeout"`
	PoolSize int           `yaml:"pool_size"`
}

// Htpasswd is an htpasswd source.
type Htpasswd struct {
	Pos  yamlx.Pos
	Name string `yaml:"name"`
	File string `yaml:"file"`
}

// AuthCache is auth.cache.
type AuthCache struct {
	Pos yamlx.Pos
	// TTL is a pointer because 0s (cache off) differs from unset.
	TTL         *time.Duration `yaml:"ttl"`
	NegativeTTL time.Duration  `yaml:"negative_ttl"`
	MaxEntries  int            `yaml:"max_entries"`
}

// validate checks the auth section and names each source; errors are
// file:line: key: message.
func (a *Auth) validate() yamlx.Errors {
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
	}
	c := &a.Cache
	if *c.TTL < 0 {
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

func (l *LDAP) validate() yamlx.Errors {
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

func (m *Mailbox) validate() yamlx.Errors {
	var errs yamlx.Errors
	add := func(key, format string, args ...any) { errs = append(errs, yamlx.Errorf(m.Pos, key, format, args...)) }
	host, _, err := net.SplitHostPort(m.Address)
	if err != nil {
		add("address", "%q is not host:port", m.Address)
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

func (d *Dovecot) validate() yamlx.Errors {
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
func (a *Auth) resolvePaths(abs func(*string)) {
	abs(&a.UsersFile)
	for i := range a.Sources {
		s := &a.Sources[i]
		if s.LDAP != nil {
			abs(&s.LDAP.CAFile)
			abs(&s.LDAP.BindPasswordFile)
		}
		for _, m := range []*Mailbox{s.IMAP, s.POP3} {
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

// placeSources gives entries that are not mappings (yamlx has reported
// them) and an absent cache section a position, so errors about them
// still name the file and the key.
func (a *Auth) placeSources() {
	for i := range a.Sources {
		if s := &a.Sources[i]; s.Pos.File == "" {
			s.Pos = yamlx.Pos{File: a.Pos.File, Line: a.Pos.LineOf("sources"), Key: fmt.Sprintf("auth.sources[%d]", i)}
		}
	}
	if a.Cache.Pos.File == "" {
		a.Cache.Pos = yamlx.Pos{File: a.Pos.File, Line: a.Pos.Line, Key: "auth.cache"}
	}
}

// Kind is the source's kind (ldap, imap, pop3, dovecot, htpasswd, backend),
// or "" for an entry that names none.
func (s *AuthSource) Kind() string {
	switch {
	case s.LDAP != nil:
		return "ldap"
	case s.IMAP != nil:
		return "imap"
	case s.POP3 != nil:
		return "pop3"
	case s.Dovecot != nil:
		return "dovecot"
	case s.Htpasswd != nil:
		return "htpasswd"
	case s.Backend != nil:
		return "backend"
	}
	return ""
}

// Name is the source's name in logs, metrics and auth test: its name key,
// or its kind.
func (s *AuthSource) Name() string {
	var n string
	switch {
	case s.LDAP != nil:
		n = s.LDAP.Name
	case s.IMAP != nil:
		n = s.IMAP.Name
	case s.POP3 != nil:
		n = s.POP3.Name
	case s.Dovecot != nil:
		n = s.Dovecot.Name
	case s.Htpasswd != nil:
		n = s.Htpasswd.Name
	}
	if n == "" {
		return s.Kind()
	}
	return n
}
