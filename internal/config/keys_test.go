package config

import (
	"bufio"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/tlsguard/tlsguard/internal/yamlx"
)

// The README's configuration table and Keys list the same keys with the
// same defaults, so the documentation cannot drift from the code.
func TestREADMEConfigurationTable(t *testing.T) {
	f, err := os.Open("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	row := regexp.MustCompile("^\\| `([^`]+)` \\|([^|]*)\\|")
	readme := map[string]string{}
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			in = line == "## Configuration"
			continue
		}
		m := row.FindStringSubmatch(line)
		if !in || m == nil {
			continue
		}
		if _, dup := readme[m[1]]; dup {
			t.Errorf("README: %s is listed twice", m[1])
		}
		readme[m[1]] = strings.TrimSpace(m[2])
	}
	if len(readme) == 0 {
		t.Fatal("no configuration table found in README.md")
	}
	for _, k := range Keys {
		want := "`" + k.Default + "`"
		switch {
		case k.Derive != nil:
			want = k.Default
		case k.Required:
			want = "required"
		case k.Default == "":
			want = ""
		}
		got, ok := readme[k.Name]
		switch {
		case !ok:
			t.Errorf("README: %s is missing from the configuration table (default %s)", k.Name, want)
		case got != want:
			t.Errorf("README: %s has default %q, the code %q", k.Name, got, want)
		}
		delete(readme, k.Name)
	}
	for name := range readme {
		t.Errorf("README: %s is not a key of config.Keys", name)
	}
}

// Every key of the schema is in Keys and every entry of Keys is a key of the
// schema, so a new field cannot go without its row (and its default).
func TestKeysCoverSchema(t *testing.T) {
	inKeys := map[string]bool{}
	for _, k := range Keys {
		if inKeys[k.Name] {
			t.Errorf("Keys lists %s twice", k.Name)
		}
		inKeys[k.Name] = true
		if k.Required && k.Default != "" {
			t.Errorf("%s is required and has a default", k.Name)
		}
	}
	seen := map[string]bool{}
	var walk func(t reflect.Type, prefix string)
	walk = func(typ reflect.Type, prefix string) {
		for i := 0; i < typ.NumField(); i++ {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			ft := typ.Field(i).Type
			key := prefix + name
			if ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct {
				key += "[]"
			}
			if inKeys[key] {
				seen[key] = true
				continue
			}
			for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
				ft = ft.Elem()
			}
			if ft.Kind() != reflect.Struct || ft == reflect.TypeFor[yamlx.ByteSize]() {
				t.Errorf("%s is in the schema but not in Keys", key)
				continue
			}
			walk(ft, key+".")
		}
	}
	walk(reflect.TypeFor[Config](), "")
	for _, k := range Keys {
		if !seen[k.Name] {
			t.Errorf("Keys lists %s, which is not a key of the schema", k.Name)
		}
	}
}

// Every default decodes as the file would, into every place its key names
// (each listener, a present proxy_protocol section).
func TestDefaultsDecode(t *testing.T) {
	c := Config{Listeners: []Listener{{}, {ProxyProtocol: &ProxyProtocol{}}}}
	if err := fill(&c); err != nil {
		t.Fatal(err)
	}
	d := Default()
	if *d.Backend.PoolSize != 256 || d.Backend.Timeout.String() != "30s" || d.Limits.MaxMessageSize != 25<<20 || d.TLS.MinVersion != "1.2" {
		t.Errorf("defaults not filled: %+v %+v", d.Backend, d.Limits)
	}
	if !*c.Listeners[0].Auth || c.Listeners[0].ProxyProtocol != nil || c.Listeners[1].ProxyProtocol.HeaderTimeout.String() != "5s" {
		t.Errorf("listener defaults: %+v %+v", c.Listeners[0], c.Listeners[1].ProxyProtocol)
	}
}

// A key whose zero is a setting of its own keeps it: pool_size: 0 means no
// reuse, auth: false no AUTH, where leaving them out means 256 and true.
func TestExplicitZeroIsKept(t *testing.T) {
	p := writeConfig(t, "hostname: mx.example.org\nlisteners: [{name: a, address: \"127.0.0.1:25\", tls: none, auth: false}]\nbackend: {address: \"127.0.0.1:2525\", pool_size: 0}\npolicy: p.yaml\n")
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if *c.Backend.PoolSize != 0 || c.ProxyBackend().PoolSize != 0 || *c.Listeners[0].Auth || c.ProxyListeners()[0].Auth {
		t.Errorf("explicit zero replaced by the default: pool_size %d auth %v", *c.Backend.PoolSize, *c.Listeners[0].Auth)
	}
}

// A reload keeps the running value of the sections that apply only at
// restart and names them; listeners apply at once. A key left out and the
// same key written with its default are no change.
func TestKeepRestartOnly(t *testing.T) {
	p := writeConfig(t, validConfig)
	running, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(validConfig, "  max_message_size: 10M\n", "  max_message_size: 10M\n  max_recipients: 7\n", 1)
	edited = strings.Replace(edited, "    auth: false\n", "", 1)
	edited = strings.Replace(edited, "  timeout: 10s\n", "  timeout: 10s\n  pool_size: 256\n  pool_idle: 20s\n", 1)
	if err := os.WriteFile(p, []byte(edited), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	changed := c.KeepRestartOnly(running)
	if len(changed) != 1 || changed[0] != "limits" {
		t.Errorf("changed sections = %q, want [limits]", changed)
	}
	if c.Limits.MaxRecipients != running.Limits.MaxRecipients || !c.ProxyListeners()[2].Auth {
		t.Errorf("limits not kept (%d) or listener change not applied (%+v)", c.Limits.MaxRecipients, c.ProxyListeners()[2])
	}
}
