package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestServeRefusesBadConfigBeforeListening(t *testing.T) {
	p := filepath.Join(t.TempDir(), "tlsguard.yaml")
	body := `hostname: mail.example.org
state_dir: ./state
listeners:
  - name: submissions
    address: "127.0.0.1:2465"
    tls: bogus
backend:
  address: "127.0.0.1:2525"
policy: policies/default.yaml
`
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb strings.Builder
	if code := run([]string{"serve", "--config", p}, &out, &errb); code == 0 {
		t.Fatal("serve exited 0 on a bad config")
	}
	if !strings.Contains(errb.String(), p+":6: listeners[0].tls") {
		t.Errorf("stderr = %q", errb.String())
	}
}
