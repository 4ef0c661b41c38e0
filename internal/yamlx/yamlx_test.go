package yamlx_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tlsguard/tlsguard/internal/yamlx"
)

type backend struct {
	Pos     yamlx.Pos
	Address string        `yaml:"address"`
	Timeout time.Duration `yaml:"timeout"`
	Port    int           `yaml:"port"`
	TLS     *bool         `yaml:"tls"`
}

type config struct {
	Hostname string            `yaml:"hostname"`
	Backends []backend         `yaml:"backends"`
	Tags     map[string]string `yaml:"tags"`
}

func TestDecodeValid(t *testing.T) {
	var c config
	src := "hostname: mx\nbackends:\n  - address: a\n    timeout: 3s\n    port: 25\n    tls: true\ntags: {x: y}\n"
	if err := yamlx.Decode("c.yaml", []byte(src), &c); err != nil {
		t.Fatal(err)
	}
	b := c.Backends[0]
	if c.Hostname != "mx" || b.Address != "a" || b.Timeout != 3*time.Second || b.Port != 25 || b.TLS == nil || !*b.TLS || c.Tags["x"] != "y" {
		t.Fatalf("decoded %+v", c)
	}
	if b.Pos.Line != 3 || b.Pos.Key != "backends[0]" || b.Pos.File != "c.yaml" {
		t.Fatalf("pos = %+v", b.Pos)
	}
}

func TestDecodeErrorsNameFileLineKey(t *testing.T) {
	cases := []struct{ src, want string }{
		{"hostname: x\nbackends:\n  - address: a\n    timout: 3s\n", "c.yaml:4: backends[0].timout: unknown key"},
		{"backends:\n  - port: abc\n", "c.yaml:2: backends[0].port: must be a whole number"},
		{"backends:\n  - timeout: 3q\n", `c.yaml:2: backends[0].timeout: "3q" is not a duration`},
		{"backends:\n  - tls: yes\n", `c.yaml:2: backends[0].tls: must be true or false`},
		{"hostname: [x\n", "c.yaml:1: invalid YAML"},
		{"hostname: a\nhostname: b\n", "c.yaml:2: hostname: duplicate key"},
		{"hostname: a\n---\nhostname: b\n", "only one YAML document"},
		{"backends: x\n", "c.yaml:1: backends: must be a list"},
		{"hostname: {a: b}\n", "c.yaml:1: hostname: must be a string, not a mapping"},
	}
	for _, tc := range cases {
		var c config
		err := yamlx.Decode("c.yaml", []byte(tc.src), &c)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.src, err, tc.want)
		}
	}
}

func TestDecodeReportsAllErrors(t *testing.T) {
	var c config
	err := yamlx.Decode("c.yaml", []byte("a: 1\nb: 2\n"), &c)
	es, ok := err.(yamlx.Errors)
	if !ok || len(es) != 2 || es[0].Line != 1 || es[1].Line != 2 {
		t.Fatalf("got %#v", err)
	}
}

// An empty list item or section still gets its position, so that errors
// about it name a file and line.
func TestEmptySectionHasPosition(t *testing.T) {
	var c config
	if err := yamlx.Decode("c.yaml", []byte("hostname: x\nbackends:\n  -\n"), &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Backends) != 1 || c.Backends[0].Pos.File != "c.yaml" || c.Backends[0].Pos.Line != 3 || c.Backends[0].Pos.Key != "backends[0]" {
		t.Fatalf("pos of an empty item = %+v", c.Backends)
	}
}

// An indentation error is reported at the line to fix, also when comment
// lines come before it (yaml.v3 alone points at the enclosing mapping) and
// for parser errors (which yaml.v3 counts from 0).
func TestSyntaxErrorLine(t *testing.T) {
	for _, tc := range []struct {
		src  string
		line int
	}{
		{"hostname: mx\nbackends:\n  - address: a\n    # one\n    # two\n    # three\n      port: 25\n", 7},
		{"hostname: mx\ntags:\n  a: b\n  # one\n  # two\n  # three\n c: d\n", 7},
		{"hostname: mx\ntags:\n  a: b\n c: d\n", 4},
		{"hostname: mx\ntags:\n  a: \"b\"\n  # one\n    c: d\n", 5},
		{"hostname: [mx,\n  x\ntags: {}\n", 2},
		{"hostname: mx\ntags:\n  a: b\n\n\n c: d\n", 6},
	} {
		var c config
		err := yamlx.Decode("c.yaml", []byte(tc.src), &c)
		var es yamlx.Errors
		if !errors.As(err, &es) || len(es) != 1 || es[0].Line != tc.line {
			t.Errorf("%q: got %v, want an error at line %d", tc.src, err, tc.line)
		}
	}
}
