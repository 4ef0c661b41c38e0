package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"

	"github.com/tlsguard/tlsguard/internal/yamlx"
)

// CheckFiles reports every file the config names that cannot be read, at
// the line and key that name it: the policy, the users and credential files,
// the certificates, CA files and the cluster's secrets. Load does not read them (a config is
// checked on its own in tests and fuzzing); serve, reload and check call
// this right after Load, so that a missing file reads like any other error
// in the config. A Dovecot socket is not checked: Dovecot being down is a
// dependency failure (a temporary AUTH failure), not a config error.
func (c *Config) CheckFiles() yamlx.Errors {
	var errs yamlx.Errors
	check := func(p yamlx.Pos, key, path string) {
		if path == "" {
			return
		}
		if err := readable(path); err != nil {
			errs = append(errs, yamlx.Errorf(p, key, "%v", err))
		}
	}
	check(c.Pos, "policy", c.Policy)
	a := &c.Auth
	check(a.Pos, "users_file", a.UsersFile)
	for i := range a.Sources {
		s := &a.Sources[i]
		if s.LDAP != nil {
			check(s.LDAP.Pos, "ca_file", s.LDAP.CAFile)
			check(s.LDAP.Pos, "bind_password_file", s.LDAP.BindPasswordFile)
		}
		for _, m := range []*Mailbox{s.IMAP, s.POP3} {
			if m != nil {
				check(m.Pos, "ca_file", m.CAFile)
			}
		}
		if s.Htpasswd != nil {
			check(s.Htpasswd.Pos, "file", s.Htpasswd.File)
		}
	}
	check(c.Backend.Pos, "tls_ca_file", c.Backend.TLSCAFile)
	if c.Cluster.On() {
		check(c.Cluster.Pos, "key_file", c.Cluster.KeyFile)
		check(c.Cluster.Redis.Pos, "password_file", c.Cluster.Redis.PasswordFile)
		check(c.Cluster.Redis.Pos, "ca_file", c.Cluster.Redis.CAFile)
	}
	if c.NeedsTLS() {
		t := &c.TLS
		for i := range t.Certificates {
			p := &t.Certificates[i]
			check(p.Pos, "cert", p.Cert)
			check(p.Pos, "key", p.Key)
		}
		if m := t.ACME; m != nil {
			check(m.Pos, "ca_root", m.CARoot)
			if m.DNS != nil {
				check(m.DNS.Pos, "key_file", m.DNS.KeyFile)
			}
			if m.EAB != nil {
				check(m.EAB.Pos, "mac_key_file", m.EAB.MACKeyFile)
			}
		}
	}
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
	return errs
}

// readable opens path for reading, naming it in the error without Go's
// "open" prefix.
func readable(path string) error {
	f, err := os.Open(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			return fmt.Errorf("%s: %w", path, pe.Err)
		}
		return err
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return fmt.Errorf("%s: is a folder, not a file", path)
	}
	return nil
}
