package yamlx_test

import (
	"strings"
	"testing"
	"time"

	"github.com/tlsguard/tlsguard/internal/yamlx"
)

func env(vars map[string]string) yamlx.Lookup {
	return func(name string) (string, bool) { v, ok := vars[name]; return v, ok }
}

func TestExpandEnv(t *testing.T) {
	lookup := env(map[string]string{"HOST": "mx.example.org", "EMPTY": ""})
	for _, tc := range []struct{ in, want string }{
		{"${HOST}", "mx.example.org"},
		{"smtp://${HOST}:25", "smtp://mx.example.org:25"},
		{"${UNSET:-fallback}", "fallback"},
		{"${EMPTY:-fallback}", "fallback"},
		{"${EMPTY}", ""},
		{"${HOST:-x}", "mx.example.org"},
		{"${UNSET:-}", ""},
		{"$$HOST", "$HOST"},
		{"cost$$${HOST}", "cost$mx.example.org"},
		{"^.*@example\\.org$", "^.*@example\\.org$"}, // a pattern's anchor stays
		{"a$b", "a$b"},
	} {
		got, err := yamlx.ExpandEnv(tc.in, lookup)
		if err != nil || got != tc.want {
			t.Errorf("ExpandEnv(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"${UNSET}", "${HOST", "${1X}", "${}"} {
		if got, err := yamlx.ExpandEnv(bad, lookup); err == nil {
			t.Errorf("ExpandEnv(%q) = %q, want an error", bad, got)
		}
	}
}

func TestDecodeEnvTypesAndPositions(t *testing.T) {
	lookup := env(map[string]string{"PORT": "2525", "TLS": "true", "WAIT": "3s", "ADDR": "a: b"})
	var c config
	src := "hostname: \"${PORT}\"\nbackends:\n  - address: ${ADDR}\n    port: ${PORT}\n    tls: ${TLS}\n    timeout: ${WAIT}\n"
	if err := yamlx.DecodeEnv("c.yaml", []byte(src), &c, lookup); err != nil {
		t.Fatal(err)
	}
	b := c.Backends[0]
	// A value is one scalar, whatever it holds: "a: b" adds no key.
	if c.Hostname != "2525" || b.Address != "a: b" || b.Port != 2525 || b.TLS == nil || !*b.TLS || b.Timeout != 3*time.Second {
		t.Fatalf("decoded %+v %+v", c, b)
	}

	err := yamlx.DecodeEnv("c.yaml", []byte("hostname: mx\nbackends:\n  - address: ${NOPE}\n"), &c, lookup)
	if err == nil || !strings.Contains(err.Error(), "c.yaml:3: backends[0].address: environment variable NOPE is not set") {
		t.Fatalf("err = %v", err)
	}
	// Keys are never expanded.
	err = yamlx.DecodeEnv("c.yaml", []byte("${PORT}: x\n"), &c, lookup)
	if err == nil || !strings.Contains(err.Error(), "unknown key") {
		t.Fatalf("err = %v", err)
	}
}
