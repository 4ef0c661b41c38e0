package auth

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/bcrypt"

	"github.com/tlsguard/tlsguard/internal/yamlx"
)

// Htpasswd checks user names and passwords against an Apache htpasswd file
// holding bcrypt hashes, as "htpasswd -B" writes them. It is immutable and
// safe for concurrent use; a reload builds a new one. Build it with
// LoadHtpasswd: the zero value knows no users and has no dummy hash.
type Htpasswd struct {
	users map[string][]byte // user name -> bcrypt hash
	// dummy is a bcrypt hash of a random secret at the cost most users have,
	// compared against for unknown users so that the time Verify takes does
	// not tell which users exist.
	dummy []byte
}

// LoadHtpasswd reads an htpasswd file: one "user:hash" per line; blank lines
// and lines starting with "#" are ignored. Only bcrypt hashes ($2y$, $2a$,
// $2b$) are accepted; MD5 ($apr1$), SHA-1 ({SHA}), crypt and plain-text
// entries are refused, because they are fast to brute-force. Every problem is
// returned at once as yamlx.Errors naming the file and line (never the hash).
func LoadHtpasswd(path string) (*Htpasswd, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading htpasswd file: %w", err)
	}
	return parseHtpasswd(path, data)
}

func parseHtpasswd(file string, data []byte) (*Htpasswd, error) {
	h := &Htpasswd{users: make(map[string][]byte)}
	firstLine := map[string]int{}
	costs := map[int]int{}
	var errs yamlx.Errors
	fail := func(line int, format string, args ...any) {
		errs = append(errs, &yamlx.Error{File: file, Line: line, Msg: fmt.Sprintf(format, args...)})
	}
	for i, raw := range bytes.Split(data, []byte("\n")) {
		line := i + 1
		text := strings.TrimSuffix(string(raw), "\r")
		if strings.TrimSpace(text) == "" || strings.HasPrefix(text, "#") {
			continue
		}
		user, hash, ok := strings.Cut(text, ":")
		if !ok {
			fail(line, `expected "user:hash"`)
			continue
		}
		if user == "" {
			fail(line, "empty user name")
			continue
		}
		if strings.IndexFunc(user, func(r rune) bool { return r <= ' ' || r == 0x7f }) >= 0 {
			fail(line, "user name %q contains a space or control character", user)
			continue
		}
		if first, dup := firstLine[user]; dup {
			fail(line, "user %q is already defined on line %d", user, first)
			continue
		}
		firstLine[user] = line
		if kind := hashKind(hash); kind != "" {
			fail(line, "user %q: %s hashes are not accepted; use bcrypt (htpasswd -B)", user, kind)
			continue
		}
		cost, err := bcrypt.Cost([]byte(hash))
		if err != nil || len(hash) != 60 {
			fail(line, "user %q: malformed bcrypt hash", user)
			continue
		}
		h.users[user] = []byte(hash)
		costs[cost]++
	}
	if len(errs) > 0 {
		return nil, errs
	}
	cost := bcrypt.DefaultCost
	for c, n := range costs {
		if n > costs[cost] || (n == costs[cost] && c > cost) {
			cost = c
		}
	}
	secret := make([]byte, 32)
	rand.Read(secret) // never fails (crypto/rand, Go 1.24+)
	dummy, err := bcrypt.GenerateFromPassword(secret, cost)
	if err != nil {
		return nil, fmt.Errorf("%s: making the dummy hash: %w", file, err)
	}
	h.dummy = dummy
	return h, nil
}

// hashKind returns "" for a bcrypt hash in one of the accepted variants,
// otherwise a name for the kind of hash found, for the error message.
func hashKind(hash string) string {
	switch {
	case strings.HasPrefix(hash, "$2y$"), strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"):
		return ""
	case strings.HasPrefix(hash, "$2"):
		return "this bcrypt variant's"
	case strings.HasPrefix(hash, "$apr1$"):
		return "MD5 ($apr1$)"
	case strings.HasPrefix(hash, "{SHA}"):
		return "SHA-1 ({SHA})"
	case strings.HasPrefix(hash, "$1$"):
		return "MD5-crypt ($1$)"
	case strings.HasPrefix(hash, "$5$"), strings.HasPrefix(hash, "$6$"):
		return "SHA-crypt ($5$/$6$)"
	case strings.HasPrefix(hash, "$"):
		return "unknown"
	case len(hash) == 13:
		return "DES crypt or plain-text"
	}
	return "plain-text or unknown"
}

// Users returns the number of users in the file.
func (h *Htpasswd) Users() int { return len(h.users) }

// Verify reports whether password is user's password. For an unknown user it
// does the same bcrypt work against a dummy hash, so timing does not reveal
// which users exist. As with every bcrypt implementation, only the first 72
// bytes of a password count.
func (h *Htpasswd) Verify(user, password string) bool {
	hash, ok := h.users[user]
	if !ok {
		_ = bcrypt.CompareHashAndPassword(h.dummy, []byte(password))
		return false
	}
	return bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil
}
