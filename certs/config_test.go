package certs_test

import (
	"strings"
	"testing"

	"github.com/tlsguard/tlsguard/certs"
	"github.com/tlsguard/tlsguard/internal/yamlx"
)

// decode parses a tlsguard.yaml fragment with a tls section, as the config
// loader does.
func decode(t *testing.T, src string) certs.Config {
	t.Helper()
	var doc struct {
		TLS certs.Config `yaml:"tls"`
	}
	if err := yamlx.Decode("tlsguard.yaml", []byte(src), &doc); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return doc.TLS
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      []string // substrings of the error; none: valid
	}{
		{"static", "tls:\n  certificates:\n    - cert: a.pem\n      key: a.key\n", nil},
		{"self-signed", "tls:\n  self_signed: true\n  min_version: \"1.3\"\n", nil},
		{"acme", "tls:\n  acme:\n    email: a@example.org\n    agree_tos: true\n", nil},
		{"acme dns", "tls:\n  acme:\n    email: a@example.org\n    agree_tos: true\n    challenge: dns-01\n    dns:\n      provider: rfc2136\n      server: 127.0.0.1:53\n      key_name: k\n      key_file: /k\n", nil},
		{"none", "tls:\n  min_version: \"1.2\"\n", []string{"tlsguard.yaml:2: tls: no certificate source"}},
		{"absent", "", []string{"tls: no certificate source"}},
		{"two", "tls:\n  self_signed: true\n  certificates:\n    - cert: a\n      key: b\n", []string{"tls: only one certificate source may be set, found certificates and self_signed"}},
		{"version", "tls:\n  min_version: \"1.1\"\n  self_signed: true\n", []string{`tlsguard.yaml:2: tls.min_version: "1.1" is not one of`}},
		{"pair", "tls:\n  certificates:\n    - cert: a.pem\n", []string{"tlsguard.yaml:3: tls.certificates[0].key: needs"}},
		{"tos", "tls:\n  acme:\n    email: a@example.org\n", []string{"tlsguard.yaml:3: tls.acme.agree_tos: must be true"}},
		{"email", "tls:\n  acme:\n    agree_tos: true\n", []string{"tlsguard.yaml:3: tls.acme.email: needs"}},
		{"challenge", "tls:\n  acme:\n    agree_tos: true\n    challenge: dns\n", []string{`tls.acme.challenge: "dns" is not one of`}},
		{"ca", "tls:\n  acme:\n    agree_tos: true\n    ca: le\n", []string{`tls.acme.ca: "le" is not`}},
		{"names", "tls:\n  acme:\n    agree_tos: true\n    names: [ok.example, \"bad name\"]\n", []string{`tls.acme.names[1]: "bad name"`}},
		{"dns missing", "tls:\n  acme:\n    agree_tos: true\n    challenge: dns-01\n", []string{"tls.acme.dns: challenge dns-01 needs"}},
		{"dns key", "tls:\n  acme:\n    agree_tos: true\n    challenge: dns-01\n    dns:\n      provider: rfc2136\n      server: ns:53\n      key_name: k\n", []string{"tlsguard.yaml:6: tls.acme.dns.key: set exactly one"}},
		{"port mix", "tls:\n  acme:\n    agree_tos: true\n    http_port: 8080\n    challenge: tls-alpn-01\n", []string{"tls.acme.http_port: only applies to challenge http-01"}},
		{"zerossl", "tls:\n  acme:\n    agree_tos: true\n    ca: zerossl\n", []string{"tls.acme.eab: ZeroSSL needs"}},
		{"eab", "tls:\n  acme:\n    agree_tos: true\n    eab:\n      key_id: x\n", []string{"tlsguard.yaml:5: tls.acme.eab.mac_key: set exactly one of mac_key, mac_key_file"}},
		{"eab both", "tls:\n  acme:\n    agree_tos: true\n    eab:\n      key_id: x\n      mac_key: a\n      mac_key_file: b\n", []string{"tlsguard.yaml:6: tls.acme.eab.mac_key: set exactly one of mac_key, mac_key_file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := decode(t, tc.src)
			err := cfg.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate accepted it")
			}
			if _, ok := err.(yamlx.Errors); !ok {
				t.Errorf("error is %T, want yamlx.Errors", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
