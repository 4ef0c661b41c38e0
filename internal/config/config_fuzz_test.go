package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsguard/tlsguard/internal/yamlx"
)

// FuzzLoadConfig checks Load on any file content:
//   - it does not panic;
//   - an error is yamlx.Errors whose every entry names the file, a line
//     (0 for the file as a whole) and a message, and its text starts with
//     the file name, as the README promises;
//   - a config that loads has what serve needs: a valid hostname, at least
//     one listener with a known TLS mode and a host:port address, a backend
//     address, a policy path made absolute, and limits that convert.
//
// The seed corpus (testdata/fuzz/FuzzLoadConfig) holds the shipped configs
// and broken variants of them.
func FuzzLoadConfig(f *testing.F) {
	f.Add([]byte(validConfig))
	for _, name := range []string{"../../tlsguard.yaml", "../../deploy/container.yaml"} {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(""))
	f.Add([]byte("hostname: [x\n"))
	dir := f.TempDir()
	path := filepath.Join(dir, "tlsguard.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		// A hang is a bug too (a SIGHUP reload must not stall): crash the
		// worker so that the fuzzer keeps the input.
		watchdog := time.AfterFunc(5*time.Second, func() { panic(fmt.Sprintf("Load hangs on %q", data)) })
		defer watchdog.Stop()
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := Load(path)
		if err != nil {
			if !strings.HasPrefix(err.Error(), path) {
				t.Fatalf("error %q does not start with the file name", err)
			}
			var es yamlx.Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error %T %q is not yamlx.Errors", err, err)
			}
			for _, e := range es {
				if e.File != path || e.Line < 0 || e.Msg == "" {
					t.Fatalf("bad error %#v", e)
				}
			}
			return
		}
		if !validHostname(c.Hostname) || len(c.Listeners) == 0 || c.Backend.Address == "" || !filepath.IsAbs(c.Policy) {
			t.Fatalf("loaded an incomplete config: %+v", c)
		}
		for _, l := range c.ProxyListeners() {
			if l.Name == "" || (l.TLS != "implicit" && l.TLS != "starttls" && l.TLS != "none") {
				t.Fatalf("loaded listener %+v", l)
			}
			if l.RequireTLS && l.TLS == "none" {
				t.Fatalf("require_tls on a plaintext listener: %+v", l)
			}
		}
		lim := c.ProxyLimits()
		if lim.MaxMessageBytes < 0 || lim.MaxRecipients < 0 || lim.CommandTimeout < 0 || lim.DataTimeout < 0 || lim.AuthFailDelay < 0 {
			t.Fatalf("negative limits %+v", lim)
		}
		if lim.MaxLineLength != 0 && lim.MaxLineLength < 1000 {
			t.Fatalf("max_line_length %d below RFC 5321's 1000", lim.MaxLineLength)
		}
	})
}
