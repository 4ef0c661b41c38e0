package auth

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// fakeSource answers from a map and counts its calls.
type fakeSource struct {
	users map[string]string
	down  bool
	calls int
	id    Identity
}

func (f *fakeSource) Authenticate(_ context.Context, user, pass string) (Identity, error) {
	f.calls++
	if f.down {
		return Identity{}, errors.New("connection refused")
	}
	p, ok := f.users[user]
	switch {
	case !ok:
		return Identity{}, ErrNoSuchUser
	case p != pass:
		return Identity{}, ErrBadPassword
	}
	return f.id, nil
}

type recorder map[string]int

func (r recorder) Observe(source string, err error, _ float64) { r[source+" "+Result(err)]++ }

// The chain: no such user passes on; a wrong password or a source that is
// down stops, and names the source.
func TestChainOrder(t *testing.T) {
	a := &fakeSource{users: map[string]string{"alice": "a"}, id: Identity{Groups: []string{"g"}}}
	b := &fakeSource{users: map[string]string{"bob": "b", "alice": "other"}}
	rec := recorder{}
	c := NewChain(rec, Named{"first", a}, Named{"second", b})
	ctx := context.Background()

	id, err := c.Authenticate(ctx, "alice", "a")
	if err != nil || id.Source != "first" || id.User != "alice" || len(id.Groups) != 1 {
		t.Fatalf("alice: %+v %v", id, err)
	}
	if id, err = c.Authenticate(ctx, "bob", "b"); err != nil || id.Source != "second" {
		t.Fatalf("bob: %+v %v", id, err)
	}
	// alice's wrong password at the first source is final, even though the
	// second would take "other".
	if _, err = c.Authenticate(ctx, "alice", "other"); !errors.Is(err, ErrBadPassword) || SourceOf(err) != "first" {
		t.Fatalf("alice, wrong password: %v (source %q)", err, SourceOf(err))
	}
	if _, err = c.Authenticate(ctx, "nobody", "x"); !errors.Is(err, ErrNoSuchUser) || Temporary(err) {
		t.Fatalf("nobody: %v", err)
	}
	a.down = true
	calls := b.calls
	if _, err = c.Authenticate(ctx, "bob", "b"); !Temporary(err) || SourceOf(err) != "first" || b.calls != calls {
		t.Fatalf("first source down: %v, second asked %d times", err, b.calls-calls)
	}
	if rec["first unavailable"] != 1 || rec["second success"] != 1 || rec["first wrong_password"] != 1 {
		t.Fatalf("observed: %v", rec)
	}
}

// The cache: a success is remembered for its password only, for ttl; a
// temporary error is never remembered; a changed password takes effect
// after ttl; the table is bounded.
func TestCache(t *testing.T) {
	clock := time.Unix(1_000_000, 0)
	now = func() time.Time { return clock }
	defer func() { now = time.Now }()
	src := &fakeSource{users: map[string]string{"alice": "a"}}
	c := NewCache(src, CacheConfig{TTL: time.Minute, MaxEntries: 3}).(*Cache)
	ctx := context.Background()

	for i := 0; i < 3; i++ {
		if _, err := c.Authenticate(ctx, "alice", "a"); err != nil {
			t.Fatal(err)
		}
	}
	if src.calls != 1 {
		t.Fatalf("source asked %d times for one password, want 1", src.calls)
	}
	if _, err := c.Authenticate(ctx, "alice", "b"); !errors.Is(err, ErrBadPassword) || src.calls != 2 {
		t.Fatalf("another password: %v after %d calls", err, src.calls)
	}
	// Changed at the source: the old password still works within ttl ...
	src.users["alice"] = "new"
	if _, err := c.Authenticate(ctx, "alice", "a"); err != nil {
		t.Fatalf("within ttl: %v", err)
	}
	// ... and not after.
	clock = clock.Add(61 * time.Second)
	if _, err := c.Authenticate(ctx, "alice", "a"); !errors.Is(err, ErrBadPassword) {
		t.Fatalf("after ttl: %v", err)
	}
	// Down: never cached.
	src.down = true
	calls := src.calls
	for i := 0; i < 2; i++ {
		if _, err := c.Authenticate(ctx, "alice", "new"); !Temporary(err) {
			t.Fatalf("down: %v", err)
		}
	}
	if src.calls != calls+2 {
		t.Fatal("a temporary error was cached")
	}
	src.down = false
	for i := 0; i < 10; i++ {
		u := fmt.Sprint("u", i)
		src.users[u] = "p"
		c.Authenticate(ctx, u, "p")
	}
	if c.Len() > 3 {
		t.Fatalf("%d entries, max 3", c.Len())
	}
	// No password in memory: the entry holds a MAC only.
	for _, el := range c.entries {
		if e := el.Value.(*cacheEntry); e.mac == c.mac(e.user, "q") {
			t.Fatal("MAC does not depend on the password")
		}
	}
}

// Negative answers are remembered only with negative_ttl.
func TestCacheNegative(t *testing.T) {
	src := &fakeSource{users: map[string]string{"alice": "a"}}
	c := NewCache(src, CacheConfig{TTL: time.Minute, NegativeTTL: time.Minute})
	for i := 0; i < 3; i++ {
		_, err := c.Authenticate(context.Background(), "alice", "wrong")
		if !errors.Is(err, ErrBadPassword) {
			t.Fatal(err)
		}
	}
	if src.calls != 1 {
		t.Fatalf("source asked %d times for one wrong password with negative_ttl", src.calls)
	}
	if NewCache(src, CacheConfig{}) != Source(src) {
		t.Fatal("ttl 0 still caches")
	}
}

// BenchmarkCacheMemory reports the heap one cached login costs.
func BenchmarkCacheMemory(b *testing.B) {
	const users = 10000
	src := &fakeSource{users: map[string]string{}, id: Identity{Groups: []string{"cn=staff,ou=groups,dc=example,dc=org"}, Addresses: []string{"user@example.org"}}}
	for i := 0; i < users; i++ {
		src.users[fmt.Sprintf("user%05d", i)] = "password-123456"
	}
	for n := 0; n < b.N; n++ {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		c := NewCache(src, CacheConfig{TTL: time.Hour, MaxEntries: users})
		for i := 0; i < users; i++ {
			u := fmt.Sprintf("user%05d", i)
			// As a directory answers: strings of the entry's own.
			id := Identity{User: u, Source: "ldap", Groups: []string{strings.Clone(src.id.Groups[0])}, Addresses: []string{u + "@example.org"}}
			c.(*Cache).store(&cacheEntry{user: u, mac: c.(*Cache).mac(u, "password-123456"), id: id, expires: now().Add(time.Hour)})
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/users, "B/entry")
		runtime.KeepAlive(c)
	}
}
