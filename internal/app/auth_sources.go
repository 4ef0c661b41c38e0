package app

// Building the credential sources that the auth section names: files
// (htpasswd, bind passwords, CAs) are read here, at start and on each
// reload, so a reload picks up their changes.

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/tlsguard/tlsguard/internal/auth"
	"github.com/tlsguard/tlsguard/internal/config"
	"github.com/tlsguard/tlsguard/proxy"
)

// cacheConfig is auth.cache for the auth package.
func cacheConfig(a *config.Auth) auth.CacheConfig {
	return auth.CacheConfig{TTL: *a.Cache.TTL, NegativeTTL: a.Cache.NegativeTTL, MaxEntries: a.Cache.MaxEntries}
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
func buildSources(a *config.Auth, b authBuild) (auth.Source, *auth.Chain, error) {
	srcs := a.Sources
	switch {
	case a.UsersFile != "":
		srcs = []config.AuthSource{{Htpasswd: &config.Htpasswd{File: a.UsersFile}}}
	case a.Backend:
		t := true
		srcs = []config.AuthSource{{Backend: &t}}
	}
	if len(srcs) == 0 {
		return nil, nil, nil
	}
	var named []auth.Named
	for i, s := range srcs {
		src, err := buildSource(&s, b)
		if err != nil {
			if a.UsersFile != "" {
				return nil, nil, fmt.Errorf("auth.users_file: %w", err)
			}
			return nil, nil, fmt.Errorf("auth.sources[%d] (%s): %w", i, s.Name(), err)
		}
		if s.Htpasswd == nil {
			// An htpasswd file is in memory: caching it would only skip
			// the bcrypt cost the check slots are sized for.
			src = auth.NewCache(src, cacheConfig(a))
		}
		named = append(named, auth.Named{Name: s.Name(), Source: src})
	}
	chain := auth.NewChain(b.obs, named...)
	return chain, chain, nil
}

func buildSource(s *config.AuthSource, b authBuild) (auth.Source, error) {
	switch {
	case s.LDAP != nil:
		l := s.LDAP
		cfg := auth.LDAPConfig{URL: l.URL, StartTLS: l.StartTLS, BindDN: l.BindDN, BaseDN: l.BaseDN, Filter: l.Filter,
			BindTemplate: l.BindTemplate, AddressesAttribute: l.AddressesAttribute, GroupsAttribute: l.GroupsAttribute,
			Timeout: l.Timeout, PoolSize: l.PoolSize}
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
