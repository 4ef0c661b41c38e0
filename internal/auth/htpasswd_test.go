package auth_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/tlsguard/tlsguard/internal/auth"
)

func bcryptHash(t *testing.T, password string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users.htpasswd")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestHtpasswdVerify(t *testing.T) {
	alice := bcryptHash(t, "alice-secret")
	bob := bcryptHash(t, "bob secret with spaces")
	// htpasswd -B (apache2-utils) writes $2y$; the hash itself is the same.
	carol := "$2y$" + strings.TrimPrefix(bcryptHash(t, "carol-secret"), "$2a$")
	dave := "$2b$" + strings.TrimPrefix(bcryptHash(t, "dave-secret"), "$2a$")
	if !strings.HasPrefix(alice, "$2a$") {
		t.Fatalf("bcrypt now writes %q; adjust the prefix rewriting", alice[:4])
	}
	path := writeFile(t, "# users\n\nalice:"+alice+"\r\nbob:"+bob+"\ncarol:"+carol+"\ndave:"+dave)
	h, err := auth.LoadHtpasswd(path)
	if err != nil {
		t.Fatal(err)
	}
	if h.Users() != 4 {
		t.Errorf("Users() = %d", h.Users())
	}
	cases := []struct {
		user, password string
		ok             bool
	}{
		{"alice", "alice-secret", true},
		{"alice", "alice-secreT", false},
		{"alice", "", false},
		{"Alice", "alice-secret", false},
		{"bob", "bob secret with spaces", true},
		{"carol", "carol-secret", true},
		{"carol", "carol-secret ", false},
		{"dave", "dave-secret", true},
		{"mallory", "alice-secret", false},
		{"", "", false},
	}
	for _, tc := range cases {
		if got := h.Verify(tc.user, tc.password); got != tc.ok {
			t.Errorf("Verify(%q, <password>) = %v, want %v", tc.user, got, tc.ok)
		}
	}
}

// TestHtpasswdApacheHash checks hashes made by Apache's own tool: a line
// "htpasswd -nbB user 'pass word'" (apache2-utils 2.4.71) printed, and, where
// htpasswd is installed, one made now.
func TestHtpasswdApacheHash(t *testing.T) {
	lines := "user:$2y$05$vclzpIfPQVO0yav3pFaqpOFlZdxyNPvqzi9UxsAoJ57mF0vy/VkOS\n"
	if bin, err := exec.LookPath("htpasswd"); err == nil {
		out, err := exec.Command(bin, "-nbB", "-C", "4", "fresh", "pass word").Output()
		if err != nil {
			t.Fatalf("htpasswd: %v", err)
		}
		lines += string(out)
	} else {
		t.Log("htpasswd (apache2-utils) not installed; checking the recorded hash only")
	}
	h, err := auth.LoadHtpasswd(writeFile(t, lines))
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"user", "fresh"} {
		if h.Users() == 1 && user == "fresh" {
			continue
		}
		if !h.Verify(user, "pass word") {
			t.Errorf("%s: right password refused", user)
		}
		if h.Verify(user, "pass-word") {
			t.Errorf("%s: wrong password accepted", user)
		}
	}
}

func TestHtpasswdErrors(t *testing.T) {
	good := bcryptHash(t, "x")
	cases := []struct{ content, want string }{
		{"alice:$apr1$abc$defghijklmnopqrstuvw\n", ":1: user \"alice\": MD5 ($apr1$) hashes are not accepted; use bcrypt (htpasswd -B)"},
		{"alice:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n", ":1: user \"alice\": SHA-1 ({SHA}) hashes are not accepted"},
		{"alice:plaintext-password\n", ":1: user \"alice\": plain-text or unknown hashes are not accepted"},
		{"alice:$6$salt$hash\n", ":1: user \"alice\": SHA-crypt"},
		{"alice:$2x$" + good[4:] + "\n", ":1: user \"alice\": this bcrypt variant's hashes are not accepted"},
		{"\nalice:$2y$05$short\n", ":2: user \"alice\": malformed bcrypt hash"},
		{"alice:" + good + "\nalice:" + good + "\n", ":2: user \"alice\" is already defined on line 1"},
		{"alice\n", `:1: expected "user:hash"`},
		{":" + good + "\n", ":1: empty user name"},
		{"al ice:" + good + "\n", ":1: user name \"al ice\" contains a space"},
	}
	for _, tc := range cases {
		path := writeFile(t, tc.content)
		_, err := auth.LoadHtpasswd(path)
		if err == nil || !strings.Contains(err.Error(), path+tc.want) {
			t.Errorf("%q:\n got %v\nwant %q", tc.content, err, path+tc.want)
			continue
		}
		if strings.Contains(err.Error(), "$2") || strings.Contains(err.Error(), "plaintext-password") {
			t.Errorf("error leaks the hash or password: %v", err)
		}
	}
	if _, err := auth.LoadHtpasswd(filepath.Join(t.TempDir(), "missing")); err == nil || !os.IsNotExist(err) && !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}
