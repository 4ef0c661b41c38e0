package config

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/tlsguard/tlsguard/internal/yamlx"
)

// Key is one key of tlsguard.yaml.
type Key struct {
	// Name is the dotted path; "[]" stands for every item of a list.
	Name string
	// Default is the value, as YAML text, that an unset key takes; empty
	// for none. A key is unset when its field holds the zero value, so a
	// key whose zero is a setting of its own (pool_size: 0) is a pointer
	// in the schema.
	Default string
	// Required keys must be in the file.
	Required bool
	// Derive, for a default that follows from keys filled before it in
	// Keys, returns that default as YAML text; Default then says in words
	// what it is, for the README.
	Derive func(c *Config) string
}

// Keys is every key of tlsguard.yaml and its default: the one place where
// a default is set. Load fills them in before validating, and nothing
// downstream applies a default of its own. The README's configuration
// table lists the same keys and defaults; a test keeps the two equal.
// A new key is a field in the schema plus a row here and in the README.
var Keys = []Key{
	{Name: "hostname", Required: true},
	{Name: "state_dir", Default: "./state"},
	{Name: "listeners[].name", Required: true},
	{Name: "listeners[].address", Required: true},
	{Name: "listeners[].tls", Required: true},
	{Name: "listeners[].protocol", Default: "smtp"},
	{Name: "listeners[].require_tls", Default: "false"},
	{Name: "listeners[].auth", Default: "true"},
	{Name: "listeners[].greeting_delay", Default: "0s"},
	// Unset: no cap of its own, only limits.max_sessions; the shipped
	// configs give each listener a share so that a flood on one cannot
	// take another's sessions.
	{Name: "listeners[].max_sessions"},
	{Name: "listeners[].proxy_protocol.trusted"},
	{Name: "listeners[].proxy_protocol.header_timeout", Default: "5s"},
	{Name: "tls.min_version", Default: `"1.2"`},
	{Name: "tls.certificates[]"},
	{Name: "tls.self_signed", Default: "false"},
	{Name: "tls.acme"}, // its keys and defaults: certs/README.md
	{Name: "tls.watch_interval", Default: "5s"},
	{Name: "backend.address", Required: true},
	{Name: "backend.tls", Default: "none"},
	{Name: "backend.timeout", Default: "30s"},
	// 256: the pool never holds more than were in use at once within the
	// last pool_idle, so a size above the usual load costs the backend
	// nothing it had not just given; 32 made about one message in five
	// dial anew at 300 concurrent sessions.
	{Name: "backend.pool_size", Default: "256"},
	// Well under the 5 minutes a server may wait for a command (RFC 5321
	// 4.5.3.2.7), so a legacy server's connection slots come back soon
	// after a burst.
	{Name: "backend.pool_idle", Default: "20s"},
	// RFC 5321 4.5.3.2.6 gives a server 10 minutes to answer the final
	// dot; giving up sooner answers 451 for a message the backend then
	// stores, and the client's retry stores it twice.
	{Name: "backend.data_done_timeout", Default: "`10m`, at least `timeout`", Derive: func(c *Config) string {
		return max(10*time.Minute, c.Backend.Timeout).String()
	}},
	// Postfix's default process limit (100 smtpd processes): a default
	// Postfix makes further connections wait in its listen queue anyway.
	{Name: "backend.max_connections", Default: "100"},
	{Name: "backend.reserved_authenticated", Default: "a fifth of `max_connections`", Derive: func(c *Config) string {
		if c.Backend.MaxConnections == nil {
			return "0"
		}
		return strconv.Itoa(*c.Backend.MaxConnections / 5)
	}},
	// A fast client sends a typical message well within it.
	{Name: "backend.spool_after", Default: "2s"},
	{Name: "backend.tls_server_name"},
	{Name: "backend.tls_ca_file"},
	{Name: "backend.tls_skip_verify", Default: "false"},
	{Name: "mailbox_backend.imap"},
	{Name: "mailbox_backend.pop3"},
	{Name: "mailbox_backend.tls", Default: "none"},
	{Name: "mailbox_backend.timeout", Default: "30s"},
	{Name: "auth.users_file"},
	{Name: "auth.backend", Default: "false"},
	{Name: "auth.sources[].ldap.name"},
	{Name: "auth.sources[].ldap.url", Required: true},
	{Name: "auth.sources[].ldap.start_tls", Default: "false"},
	{Name: "auth.sources[].ldap.ca_file"},
	{Name: "auth.sources[].ldap.tls_server_name"},
	{Name: "auth.sources[].ldap.bind_dn"},
	{Name: "auth.sources[].ldap.bind_password_file"},
	{Name: "auth.sources[].ldap.base_dn"},
	{Name: "auth.sources[].ldap.filter"},
	{Name: "auth.sources[].ldap.bind_template"},
	{Name: "auth.sources[].ldap.addresses_attribute"},
	{Name: "auth.sources[].ldap.groups_attribute"},
	{Name: "auth.sources[].ldap.timeout", Default: "5s"},
	{Name: "auth.sources[].ldap.pool_size", Default: "4"},
	{Name: "auth.sources[].imap.name"},
	{Name: "auth.sources[].imap.address", Required: true},
	{Name: "auth.sources[].imap.tls", Default: "starttls"},
	{Name: "auth.sources[].imap.ca_file"},
	{Name: "auth.sources[].imap.tls_server_name"},
	{Name: "auth.sources[].imap.timeout", Default: "5s"},
	{Name: "auth.sources[].pop3.name"},
	{Name: "auth.sources[].pop3.address", Required: true},
	{Name: "auth.sources[].pop3.tls", Default: "starttls"},
	{Name: "auth.sources[].pop3.ca_file"},
	{Name: "auth.sources[].pop3.tls_server_name"},
	{Name: "auth.sources[].pop3.timeout", Default: "5s"},
	{Name: "auth.sources[].dovecot.name"},
	{Name: "auth.sources[].dovecot.socket"},
	{Name: "auth.sources[].dovecot.address"},
	{Name: "auth.sources[].dovecot.service", Default: "smtp"},
	{Name: "auth.sources[].dovecot.timeout", Default: "5s"},
	{Name: "auth.sources[].dovecot.pool_size", Default: "4"},
	{Name: "auth.sources[].htpasswd.name"},
	{Name: "auth.sources[].htpasswd.file", Required: true},
	{Name: "auth.sources[].backend"},
	{Name: "auth.cache.ttl", Default: "60s"},
	{Name: "auth.cache.negative_ttl", Default: "0s"},
	{Name: "auth.cache.max_entries", Default: "10000"},
	{Name: "policy", Required: true},
	{Name: "bare_line_endings", Default: "normalize"},
	{Name: "dsn", Default: "authenticated"},
	{Name: "shutdown_grace", Default: "30s"},
	{Name: "limits.max_message_size", Default: "25M"},
	{Name: "limits.max_recipients", Default: "100"},
	{Name: "limits.max_line_length", Default: "2000"},
	{Name: "limits.max_sessions", Default: "2000"},
	{Name: "limits.max_sessions_per_ip", Default: "50"},
	{Name: "limits.command_timeout", Default: "5m"}, // RFC 5321 4.5.3.2.7
	// Per read: a slow but moving upload is fine (RFC 5321 4.5.3.2.5
	// bounds the client's wait, not ours).
	{Name: "limits.data_timeout", Default: "3m"},
	{Name: "limits.write_timeout", Default: "1m"},
	{Name: "limits.handshake_timeout", Default: "30s"},
	{Name: "limits.auth_fail_delay", Default: "2s"},
	{Name: "limits.auth_max_failures", Default: "5"},
	{Name: "limits.auth_fail_window", Default: "15m"},
	// Large enough that a user behind changing addresses is not slowed
	// by a few typos, small enough that a botnet gets 200 guesses an
	// hour at one user (SECURITY.md, the AUTH model).
	{Name: "limits.auth_user_max_failures", Default: "50"},
	{Name: "limits.auth_remember", Default: "720h"},
	// bcrypt is CPU: a few checks per core keep a spray from starving the
	// rest of the process.
	{Name: "limits.auth_max_concurrent", Default: "8"},
	{Name: "log.level", Default: "info"},
	{Name: "log.format", Default: "json"},
	{Name: "admin.address"},
	{Name: "cluster.redis.address"},
	{Name: "cluster.redis.sentinel.master"},
	{Name: "cluster.redis.sentinel.addresses"},
	{Name: "cluster.redis.username"},
	{Name: "cluster.redis.password_file"},
	{Name: "cluster.redis.tls", Default: "false"},
	{Name: "cluster.redis.ca_file"},
	{Name: "cluster.redis.key_prefix", Default: `"tlsguard:"`},
	// Redis answers in well under a millisecond on a LAN: 100ms is a
	// Redis in trouble, and the mail path must not wait on it.
	{Name: "cluster.redis.timeout", Default: "100ms"},
	{Name: "cluster.share", Default: "[certificates, auth_throttle, rate_limits, session_tickets]"},
	{Name: "cluster.key_file"},
}

// Default returns a config with every default filled in and nothing else:
// what a program that builds a proxy without a file (bench/pprof) starts
// from.
func Default() *Config {
	var c Config
	if err := fill(&c); err != nil {
		panic(err) // Keys is checked by TestDefaultsDecode
	}
	return &c
}

// fill sets every unset key that has a default, decoding the default with
// yamlx exactly as if it were written in the file.
func fill(c *Config) error {
	for _, k := range Keys {
		if k.Default == "" {
			continue
		}
		var err error
		fields(reflect.ValueOf(c).Elem(), strings.Split(k.Name, "."), func(f reflect.Value) {
			if err == nil && f.IsZero() {
				d := k
				if k.Derive != nil {
					d.Default = k.Derive(c)
				}
				err = decodeDefault(d, f)
			}
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// decodeDefault decodes k.Default into f.
func decodeDefault(k Key, f reflect.Value) error {
	holder := reflect.New(reflect.StructOf([]reflect.StructField{{Name: "V", Type: f.Type(), Tag: `yaml:"v"`}}))
	if err := yamlx.Decode("config.Keys", []byte("v: "+k.Default), holder.Interface()); err != nil {
		return fmt.Errorf("default of %s: %w", k.Name, err)
	}
	f.Set(holder.Elem().Field(0))
	return nil
}

// fields calls fn with each field that path names under v: a segment
// ending in "[]" goes into every item of the list, and a nil section
// (an absent proxy_protocol) has no fields to fill.
func fields(v reflect.Value, path []string, fn func(reflect.Value)) {
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			return
		}
		v = v.Elem()
	}
	name, each := strings.CutSuffix(path[0], "[]")
	f, ok := fieldByTag(v, name)
	if !ok {
		panic("config: no field for key segment " + path[0])
	}
	switch {
	case len(path) == 1:
		fn(f)
	case each:
		for i := 0; i < f.Len(); i++ {
			fields(f.Index(i), path[1:], fn)
		}
	default:
		fields(f, path[1:], fn)
	}
}

// fieldByTag is the field of struct v whose yaml tag is name.
func fieldByTag(v reflect.Value, name string) (reflect.Value, bool) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag == name {
			return v.Field(i), true
		}
	}
	return reflect.Value{}, false
}
