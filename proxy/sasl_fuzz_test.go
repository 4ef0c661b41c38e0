package proxy

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/tlsguard/tlsguard/internal/auth"
	"github.com/tlsguard/tlsguard/policy"
)

const (
	fuzzUser = "alice"
	fuzzPass = "fuzz-secret-pw"
)

// recordingAuth accepts only fuzzUser/fuzzPass and records every call.
type recordingAuth struct {
	mu    sync.Mutex
	calls []string // user names checked
	ok    bool     // result of the last call
}

func (a *recordingAuth) Authenticate(_ context.Context, user, pass string) (auth.Identity, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls = append(a.calls, user)
	a.ok = user == fuzzUser && pass == fuzzPass
	if !a.ok {
		return auth.Identity{}, auth.ErrBadPassword
	}
	return auth.Identity{User: user}, nil
}

// fuzzServer is a Server with an authenticator and no delay or lockout, so
// that every input reaches the credential check.
func fuzzServer(f *testing.F, a auth.Source) *Server {
	pol, err := policy.Parse("fuzz.yaml", []byte("local_domains: [example.org]\n"))
	if err != nil {
		f.Fatal(err)
	}
	srv, err := New(Config{Hostname: "mail.example.org", Policy: pol, Auth: a,
		Backend: BackendConfig{Address: "127.0.0.1:1", TLS: TLSNone, Timeout: time.Second, DataDoneTimeout: time.Second,
			MaxConnections: 10, SpoolAfter: time.Second},
		Limits: Limits{MaxMessageBytes: 1 << 20, MaxRecipients: 10, MaxLineLength: 2000, MaxSessions: 10, MaxSessionsPerIP: 10,
			CommandTimeout: time.Minute, DataTimeout: time.Minute, WriteTimeout: time.Minute, HandshakeTimeout: time.Minute,
			AuthFailDelay: time.Nanosecond, AuthMaxFailures: 1 << 30, AuthFailWindow: time.Minute,
			AuthUserMaxFailures: 1 << 30, AuthRemember: time.Minute, AuthMaxConcurrent: 8}})
	if err != nil {
		f.Fatal(err)
	}
	return srv
}

// FuzzSASL drives the AUTH exchange as go-smtp does (Session.Auth, then
// Next with each decoded client response) for PLAIN (go-sasl's server) and
// LOGIN (ours), with any responses:
//   - nothing panics;
//   - the session is authenticated exactly when the exchange ends without
//     error, and then only as fuzzUser with fuzzPass, and for PLAIN only
//     with an empty or identical authorization identity;
//   - the credential check never sees an empty, overlong or control-byte
//     user name;
//   - an error is a 535/454/421 reply or a library error, and no error
//     text (which go-smtp sends to the client) carries the password.
func FuzzSASL(f *testing.F) {
	plain := func(id, user, pass string) []byte { return []byte(id + "\x00" + user + "\x00" + pass) }
	seeds := []struct {
		login bool
		ir    []byte
		hasIR bool
		r1    []byte
		r2    []byte
	}{
		{false, plain("", fuzzUser, fuzzPass), true, nil, nil},
		{false, plain(fuzzUser, fuzzUser, fuzzPass), true, nil, nil},
		{false, plain("bob", fuzzUser, fuzzPass), true, nil, nil},
		{false, nil, false, plain("", fuzzUser, fuzzPass), nil},
		{false, []byte{}, true, nil, nil},
		{false, []byte("alice"), true, nil, nil},
		{false, plain("", fuzzUser+"\r\n", fuzzPass), true, nil, nil},
		{false, []byte("\x00alice\x00" + fuzzPass + "\x00x"), true, nil, nil},
		{true, nil, false, []byte(fuzzUser), []byte(fuzzPass)},
		{true, []byte(fuzzUser), true, []byte(fuzzPass), nil},
		{true, nil, false, []byte{}, []byte(fuzzPass)},
		{true, nil, false, []byte(strings.Repeat("a", 300)), []byte(fuzzPass)},
		{true, nil, false, []byte("al\x00ice"), []byte(fuzzPass)},
	}
	for _, s := range seeds {
		f.Add(s.login, s.ir, s.hasIR, s.r1, s.r2, []byte("extra"))
	}
	auth := &recordingAuth{}
	srv := fuzzServer(f, auth)
	ip := netip.MustParseAddr("192.0.2.1")
	f.Fuzz(func(t *testing.T, login bool, ir []byte, hasIR bool, r1, r2, r3 []byte) {
		auth.mu.Lock()
		auth.calls, auth.ok = nil, false
		auth.mu.Unlock()
		s := &session{srv: srv, lc: ListenerConfig{Name: "fuzz", Auth: true}, conn: &sessionRecord{ip: ip, c: &conn{}}}
		mech := sasl.Plain
		if login {
			mech = sasl.Login
		}
		server, err := s.Auth(mech)
		if err != nil {
			t.Fatalf("Auth(%s): %v", mech, err)
		}
		var resp []byte
		if hasIR {
			resp = ir
		}
		responses := [][]byte{r1, r2, r3}
		var done bool
		var steps int
		for steps = 0; steps < 8; steps++ {
			_, done, err = server.Next(resp)
			if err != nil || done {
				break
			}
			if len(responses) == 0 {
				break // the client gives up (go-smtp: "*" or a closed connection)
			}
			resp, responses = responses[0], responses[1:]
		}
		authenticated := done && err == nil

		auth.mu.Lock()
		calls, ok := auth.calls, auth.ok
		auth.mu.Unlock()
		for _, u := range calls {
			if !validUserName(u) {
				t.Fatalf("the credential check was asked about user %q", u)
			}
		}
		if authenticated != (s.user != "") {
			t.Fatalf("exchange ended authenticated=%v but session user is %q", authenticated, s.user)
		}
		if authenticated && (!ok || s.user != fuzzUser) {
			t.Fatalf("authenticated as %q (last check ok=%v)", s.user, ok)
		}
		if authenticated && !login {
			id, _, _ := strings.Cut(string(lastPlain(ir, hasIR, r1)), "\x00")
			if id != "" && id != fuzzUser {
				t.Fatalf("authenticated with authorization identity %q", id)
			}
		}
		if err != nil {
			var se *smtp.SMTPError
			if errors.As(err, &se) && se.Code != 535 && se.Code != 454 && se.Code != 421 {
				t.Fatalf("reply %v", se)
			}
			if strings.Contains(err.Error(), fuzzPass) {
				t.Fatalf("error text %q carries the password", err)
			}
		}
	})
}

// lastPlain is the PLAIN message the server checked: the initial response,
// or the first response after the empty challenge.
func lastPlain(ir []byte, hasIR bool, r1 []byte) []byte {
	if hasIR {
		return ir
	}
	return r1
}

// validUserName is the throttle's name check, under a name the fuzz body's
// local auth does not shadow.
var validUserName = auth.ValidUserName
