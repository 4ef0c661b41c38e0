package config

import (
	"strings"
	"testing"
)

// Every bad auth value is a config error naming file:line: key.
func TestAuthConfigErrors(t *testing.T) {
	for _, tc := range []struct{ auth, want string }{
		{"  sources:\n    - ldap:\n        url: ldap://ldap.example.org\n        base_dn: dc=example,dc=org\n        filter: (uid={user})\n",
			"auth.sources[0].ldap.start_tls: ldap:// to ldap.example.org would send passwords in the clear"},
		{"  sources:\n    - ldap:\n        url: ldaps://127.0.0.1\n        base_dn: dc=example,dc=org\n        filter: (uid=alice)\n",
			"auth.sources[0].ldap.filter: must contain {user}"},
		{"  sources:\n    - ldap:\n        url: http://x\n", "auth.sources[0].ldap.url: \"http://x\" is not ldap://"},
		{"  sources:\n    - ldap:\n        url: ldaps://x\n        bind_template: uid=alice,dc=x\n", "auth.sources[0].ldap.bind_template: must contain {user}"},
		{"  sources:\n    - ldap:\n        url: ldaps://x\n        bind_dn: cn=a\n        base_dn: dc=x\n        filter: (uid={user})\n", "auth.sources[0].ldap.bind_password_file: bind_dn and bind_password_file go together"},
		{"  sources:\n    - imap:\n        address: mail.example.org:143\n        tls: none\n", "auth.sources[0].imap.tls: none to mail.example.org would send passwords in the clear"},
		{"  sources:\n    - pop3:\n        address: 127.0.0.1:110\n        tls: sometimes\n", "auth.sources[0].pop3.tls: \"sometimes\" is not one of none, starttls, implicit"},
		{"  sources:\n    - dovecot:\n        address: 10.0.0.1:12345\n", "auth.sources[0].dovecot.address: 10.0.0.1: Dovecot's auth protocol has no TLS"},
		{"  sources:\n    - dovecot: {}\n", "auth.sources[0].dovecot.socket: give one of socket"},
		{"  sources:\n    - htpasswd:\n        file: a\n      backend: true\n", "auth.sources[0]: one source per entry, found htpasswd and backend"},
		{"  sources:\n    - htpasswd:\n        file: a\n    - htpasswd:\n        file: b\n", "auth.sources[1]: source name \"htpasswd\" is used twice"},
		{"  sources:\n    - backend: false\n", "only backend: true makes sense"},
		{"  sources:\n    - htpasswd:\n        name: \"my users\"\n        file: a\n", "auth.sources[0].htpasswd.name: \"my users\": use letters"},
		{"  users_file: a\n  sources:\n    - backend: true\n", "auth.sources: cannot be combined with users_file"},
		{"  users_file: a\n  backend: true\n", "auth.backend: choose one"},
		{"  sources:\n    - backend: true\n  cache:\n    ttl: -1s\n", "auth.cache.ttl: \"-1s\" is not a duration"},
		{"  sources:\n    - backend: true\n  cache:\n    max_entries: -1\n", "auth.cache.max_entries: must not be negative"},
		{"  sources:\n    - ldap:\n        url: ldaps://x\n        base_dn: dc=x\n        filter: (uid={user})\n        colour: blue\n", "colour"},
	} {
		cfg := strings.Replace(validConfig, "auth:\n  users_file: users.htpasswd\n", "auth:\n"+tc.auth, 1)
		_, err := Load(writeConfig(t, cfg))
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), ".yaml:") {
			t.Errorf("auth:\n%s\ngot  %v\nwant %q", tc.auth, err, tc.want)
		}
	}
}

// A full source list loads, with defaults filled and paths made absolute.
func TestAuthConfigValid(t *testing.T) {
	cfg := strings.Replace(validConfig, "auth:\n  users_file: users.htpasswd\n", `auth:
  sources:
    - ldap:
        url: ldap://127.0.0.1:389
        start_tls: true
        ca_file: ldap-ca.pem
        bind_dn: cn=tlsguard,ou=services,dc=example,dc=org
        bind_password_file: ldap.secret
        base_dn: ou=people,dc=example,dc=org
        filter: "(&(objectClass=inetOrgPerson)(uid={user}))"
        addresses_attribute: mail
        groups_attribute: memberOf
        timeout: 5s
    - imap:
        address: 127.0.0.1:143
    - pop3:
        address: 127.0.0.1:110
        tls: implicit
    - dovecot:
        socket: /run/dovecot/auth-client
    - htpasswd:
        file: users.htpasswd
    - backend: true
  cache:
    ttl: 60s
    negative_ttl: 0s
    max_entries: 10000
`, 1)
	c, err := Load(writeConfig(t, cfg))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range c.Auth.Sources {
		names = append(names, s.Name())
	}
	if got := strings.Join(names, " "); got != "ldap imap pop3 dovecot htpasswd backend" {
		t.Errorf("source names %q", got)
	}
	if c.Auth.Sources[1].IMAP.TLS != "starttls" {
		t.Errorf("imap tls default %q, want starttls", c.Auth.Sources[1].IMAP.TLS)
	}
	if f := c.Auth.Sources[0].LDAP.BindPasswordFile; !strings.HasPrefix(f, "/") {
		t.Errorf("bind_password_file not made absolute: %q", f)
	}
	if cc := c.Auth.Cache; cc.TTL == nil || cc.TTL.Seconds() != 60 || cc.MaxEntries != 10000 {
		t.Errorf("cache %+v", cc)
	}
	if c.Auth.Sources[0].LDAP.PoolSize != 4 || c.Auth.Sources[3].Dovecot.Service != "smtp" || c.Auth.Sources[3].Dovecot.Timeout.Seconds() != 5 {
		t.Errorf("source defaults not filled: ldap %+v dovecot %+v", c.Auth.Sources[0].LDAP, c.Auth.Sources[3].Dovecot)
	}
}
