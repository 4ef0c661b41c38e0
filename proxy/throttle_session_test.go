package proxy_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tlsguard/tlsguard/internal/auth"
	"github.com/tlsguard/tlsguard/proxy"
)

// slowAuth is an authenticator that takes a while, as bcrypt does, and
// records how many checks ran at once.
type slowAuth struct {
	stubAuth
	delay   time.Duration
	running atomic.Int32
	most    atomic.Int32
}

func (a *slowAuth) Authenticate(ctx context.Context, user, pass string) (auth.Identity, error) {
	r := a.running.Add(1)
	defer a.running.Add(-1)
	for {
		m := a.most.Load()
		if r <= m || a.most.CompareAndSwap(m, r) {
			break
		}
	}
	time.Sleep(a.delay)
	return a.stubAuth.Authenticate(ctx, user, pass)
}

func withAuth(a auth.Source) envOpt { return func(c *proxy.Config) { c.Auth = a } }

// parallelAuth opens n sessions, then sends AUTH PLAIN on all of them at
// once and returns each reply code (0: no reply).
func parallelAuth(t *testing.T, e *env, n int, pass func(i int) string) []int {
	t.Helper()
	clients := make([]*client, n)
	for i := range clients {
		clients[i] = e.session(t, lSubmissions, true, false)
	}
	codes := make([]int, n)
	var start, wg sync.WaitGroup
	start.Add(1)
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start.Wait()
			if _, err := c.conn.Write([]byte("AUTH PLAIN " + plainIR("", testUser, pass(i)) + "\r\n")); err != nil {
				return
			}
			codes[i], _, _ = c.reply()
		}()
	}
	start.Done()
	wg.Wait()
	return codes
}

// Simultaneous guesses from one address are checked at most
// AuthMaxFailures times; the others are refused before any check.
func TestAuthParallelGuessesCannotOverdraw(t *testing.T) {
	a := &slowAuth{stubAuth: stubAuth{users: map[string]string{testUser: testPass}}, delay: 50 * time.Millisecond}
	e := newEnv(t, nil, withAuth(a)) // AuthMaxFailures: 3
	codes := parallelAuth(t, e, 30, func(int) string { return "wrong" })
	if n := a.calls.Load(); n > 3 {
		t.Errorf("%d of 30 simultaneous guesses were checked, want at most 3", n)
	}
	for i, c := range codes {
		if c != 535 && c != 421 && c != 454 {
			t.Errorf("guess %d: %d, want 535, 421 or 454", i, c)
		}
	}
	// The budget is spent: the right password is refused unchecked.
	calls := a.calls.Load()
	c := e.session(t, lSubmissions, true, false)
	c.send("AUTH PLAIN " + plainIR("", testUser, testPass))
	c.expect(421)
	if a.calls.Load() != calls {
		t.Error("password checked with the budget spent")
	}
}

// No more than AuthMaxConcurrent password checks run at once, however many
// clients log in together; they all get in.
func TestAuthChecksBoundedConcurrency(t *testing.T) {
	a := &slowAuth{stubAuth: stubAuth{users: map[string]string{testUser: testPass}}, delay: 20 * time.Millisecond}
	e := newEnv(t, nil, withAuth(a), withLimits(func(l *proxyLimits) {
		l.AuthMaxConcurrent = 2
		l.AuthMaxFailures = 100
	}))
	codes := parallelAuth(t, e, 20, func(int) string { return testPass })
	for i, c := range codes {
		if c != 235 {
			t.Errorf("login %d: %d, want 235", i, c)
		}
	}
	if m := a.most.Load(); m > 2 {
		t.Errorf("%d checks ran at once, want at most 2", m)
	}
	if a.calls.Load() != 20 {
		t.Errorf("%d checks for 20 logins", a.calls.Load())
	}
}

// The per-user budget counts a name whatever its case: a backend that
// ignores case must not give each spelling a budget of its own.
func TestAuthUserBudgetIgnoresCase(t *testing.T) {
	e := newEnv(t, nil, withLimits(func(l *proxyLimits) {
		l.AuthMaxFailures = 100
		l.AuthUserMaxFailures = 3
	}))
	c := e.session(t, lSubmissions, true, false)
	for _, name := range []string{"Bob", "BOB", "bOb"} {
		c.send("AUTH PLAIN " + plainIR("", name, "guess"))
		c.expect(535)
	}
	calls := e.auth.calls.Load()
	c.send("AUTH PLAIN " + plainIR("", "bob", "bobpass"))
	if text := c.expect(454); !strings.HasPrefix(text, "4.7.0 ") {
		t.Errorf("spent user budget: 454 %s", text)
	}
	if e.auth.calls.Load() != calls {
		t.Error("password checked with the user's budget spent")
	}
	c.cmd("NOOP", 250) // the session stays open
}
