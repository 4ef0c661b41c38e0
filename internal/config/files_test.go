package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A file the config names that is missing is reported at the key naming it.
func TestCheckFilesNamesKey(t *testing.T) {
	p := writeConfig(t, validConfig)
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	errs := c.CheckFiles()
	for _, want := range []string{
		p + ":27: policy: " + filepath.Join(filepath.Dir(p), "policies/default.yaml") + ": no such file or directory",
		": auth.users_file: ",
		": tls.certificates[0].cert: ",
	} {
		if !strings.Contains(errs.Error(), want) {
			t.Errorf("errors lack %q:\n%v", want, errs)
		}
	}
	dir := filepath.Dir(p)
	for _, f := range []string{c.Policy, c.Auth.UsersFile, c.TLS.Certificates[0].Cert, c.TLS.Certificates[0].Key} {
		os.MkdirAll(filepath.Dir(f), 0o700)
		if err := os.WriteFile(f, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if errs := c.CheckFiles(); len(errs) != 0 {
		t.Errorf("all files present (%s), got %v", dir, errs)
	}
}
