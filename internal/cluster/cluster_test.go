package cluster

import (
	"context"
	"errors"
	"io/fs"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/caddyserver/certmagic"

	"github.com/tlsguard/tlsguard/internal/auth"
	"github.com/tlsguard/tlsguard/policy"
)

func newTestClient(t *testing.T, mr *miniredis.Miniredis) *Client {
	t.Helper()
	c, err := New(Options{Address: mr.Addr(), KeyPrefix: "t:", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// localBudget is an in-process stand-in that counts like proxy's budget.
type localBudget struct {
	limit       int
	failed, pen map[string]int
}

func newLocal(limit int) *localBudget {
	return &localBudget{limit: limit, failed: map[string]int{}, pen: map[string]int{}}
}

func (l *localBudget) Reserve(k string) auth.Verdict {
	switch {
	case l.failed[k] >= l.limit:
		return auth.Spent
	case l.failed[k]+l.pen[k] >= l.limit:
		return auth.InFlight
	}
	l.pen[k]++
	return auth.Granted
}
func (l *localBudget) Refund(k string) {
	if l.pen[k] > 0 {
		l.pen[k]--
	}
}
func (l *localBudget) Fail(k string) bool {
	l.Refund(k)
	l.failed[k]++
	return l.failed[k] >= l.limit
}
func (l *localBudget) Blocked(k string) bool { return l.failed[k] >= l.limit }

// Three instances share one budget: the limit holds in total, reservations
// in flight at any instance count, and the key expires with its window.
func TestBudgetShared(t *testing.T) {
	mr := miniredis.RunT(t)
	var bs []auth.AuthBudget
	for range 3 {
		c := newTestClient(t, mr)
		bs = append(bs, c.AuthShare().Budget("addr", 5, time.Minute, newLocal(5)))
	}
	// Five attempts in flight at once across instances: the sixth waits.
	for i := range 5 {
		if v := bs[i%3].Reserve("10.0.0.1"); v != auth.Granted {
			t.Fatalf("attempt %d: %v", i, v)
		}
	}
	if v := bs[2].Reserve("10.0.0.1"); v != auth.InFlight {
		t.Fatalf("sixth in flight: %v, want InFlight", v)
	}
	for i := range 4 {
		if bs[i%3].Fail("10.0.0.1") {
			t.Fatalf("over after %d failures", i+1)
		}
	}
	if !bs[1].Fail("10.0.0.1") || !bs[0].Blocked("10.0.0.1") || bs[2].Reserve("10.0.0.1") != auth.Spent {
		t.Fatal("not spent after 5 failures at 3 instances")
	}
	if bs[0].Blocked("10.0.0.2") {
		t.Fatal("another address blocked")
	}
	mr.FastForward(2 * time.Minute)
	if mr.Exists("t:auth:addr:10.0.0.1") {
		t.Fatal("the budget outlived its window in Redis")
	}
}

// With Redis away the local budget answers: never Granted past its limit,
// and the instance reports degraded until Redis is back.
func TestBudgetDegraded(t *testing.T) {
	mr := miniredis.RunT(t)
	c := newTestClient(t, mr)
	b := c.AuthShare().Budget("addr", 2, time.Minute, newLocal(2))
	mr.Close()
	for range 2 {
		if b.Reserve("k") != auth.Granted {
			t.Fatal("local budget refused under its limit")
		}
		b.Fail("k")
	}
	if v := b.Reserve("k"); v != auth.Spent {
		t.Fatalf("Redis away, local limit reached: %v, want Spent", v)
	}
	if d, why := c.Degraded(); !d || why == "" {
		t.Fatalf("degraded %v %q", d, why)
	}
	if err := mr.Restart(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for d, _ := c.Degraded(); d; d, _ = c.Degraded() {
		if time.Now().After(deadline) {
			t.Fatal("still degraded with Redis back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if b.Reserve("other") != auth.Granted || !mr.Exists("t:auth:addr:other") {
		t.Fatal("not shared again after Redis came back")
	}
}

func TestHistoryShared(t *testing.T) {
	mr := miniredis.RunT(t)
	a := newTestClient(t, mr).AuthShare().History(time.Hour, nopHistory{})
	b := newTestClient(t, mr).AuthShare().History(time.Hour, nopHistory{})
	a.Remember("bob", "10.0.0.1")
	if !b.Known("bob", "10.0.0.1") || b.Known("bob", "10.0.0.2") || b.Known("eve", "10.0.0.1") {
		t.Fatal("history not shared")
	}
	for i := range 20 {
		a.Remember("bob", "10.1.0."+string(rune('a'+i)))
		time.Sleep(2 * time.Millisecond)
	}
	if ks, _ := mr.HKeys("t:hist:bob"); len(ks) != rememberPerUser {
		n := len(ks)
		t.Fatalf("%d addresses kept, want %d", n, rememberPerUser)
	}
}

type nopHistory struct{}

func (nopHistory) Known(string, string) bool { return false }
func (nopHistory) Remember(string, string)   {}

// GCRA over several limits: all are checked before any is counted, and the
// first one reached is named with a wait.
func TestRateStore(t *testing.T) {
	mr := miniredis.RunT(t)
	s1, s2 := newTestClient(t, mr).RateStore(), newTestClient(t, mr).RateStore()
	checks := []policy.RateCheck{
		{Limit: "wide", Kind: "messages", Who: "user:bob", Max: 10, Window: time.Hour},
		{Limit: "narrow", Kind: "messages", Who: "user:bob", Max: 3, Window: time.Hour},
	}
	for i := range 3 {
		s := []policy.RateStore{s1, s2}[i%2]
		if r, _, err := s.Take(checks); err != nil || r != -1 {
			t.Fatalf("message %d: %d %v", i, r, err)
		}
	}
	r, wait, err := s2.Take(checks)
	if err != nil || r != 1 || wait <= 0 || wait > time.Hour {
		t.Fatalf("fourth: refused %d wait %v err %v, want 1", r, wait, err)
	}
	// The refused message counted nowhere: the wide limit has 7 left.
	only := checks[:1]
	for i := range 7 {
		if r, _, _ := s1.Take(only); r != -1 {
			t.Fatalf("wide limit refused at %d", i)
		}
	}
	if r, _, _ := s1.Take(only); r != 0 {
		t.Fatal("wide limit not reached at 10")
	}
}

func TestStorage(t *testing.T) {
	mr := miniredis.RunT(t)
	seal, _ := NewSealer([]byte("0123456789abcdef0123"))
	ctx := context.Background()
	a := newTestClient(t, mr).Storage(seal, t.TempDir())
	b := newTestClient(t, mr).Storage(seal, t.TempDir())
	var _ certmagic.Storage = a
	secret := []byte("-----BEGIN EC PRIVATE KEY-----\nsecret\n")
	for _, k := range []string{"certificates/ca/a.example/a.example.key", "certificates/ca/a.example/a.example.crt", "acme/ca/users/x/x.json"} {
		if err := a.Store(ctx, k, secret); err != nil {
			t.Fatal(err)
		}
	}
	got, err := b.Load(ctx, "certificates/ca/a.example/a.example.key")
	if err != nil || string(got) != string(secret) {
		t.Fatalf("load at another instance: %q %v", got, err)
	}
	for _, v := range mr.Keys() {
		if raw := mr.HGet(v, "v"); strings.Contains(raw, "secret") {
			t.Fatalf("%s stored in clear", v)
		}
	}
	if _, err := b.Load(ctx, "nope"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing key: %v", err)
	}
	l, err := b.List(ctx, "certificates", false)
	if err != nil || !reflect.DeepEqual(l, []string{"certificates/ca"}) {
		t.Fatalf("List not recursive: %v %v", l, err)
	}
	l, _ = b.List(ctx, "certificates/ca/a.example", true)
	if len(l) != 2 {
		t.Fatalf("List recursive: %v", l)
	}
	if st, err := b.Stat(ctx, "certificates/ca"); err != nil || st.IsTerminal {
		t.Fatalf("Stat dir: %+v %v", st, err)
	}
	if st, err := b.Stat(ctx, "acme/ca/users/x/x.json"); err != nil || !st.IsTerminal || st.Modified.IsZero() {
		t.Fatalf("Stat value: %+v %v", st, err)
	}
	if !b.Exists(ctx, "acme") || b.Exists(ctx, "acme2") {
		t.Fatal("Exists")
	}
	// A sealed value moved to another key does not open.
	raw := mr.HGet("t:certs:acme/ca/users/x/x.json", "v")
	mr.HSet("t:certs:moved", "v", raw)
	if _, err := b.Load(ctx, "moved"); err == nil {
		t.Fatal("a value moved to another key opened")
	}
	if err := b.Delete(ctx, "certificates"); err != nil || b.Exists(ctx, "certificates/ca/a.example/a.example.key") {
		t.Fatalf("Delete: %v", err)
	}
	// Locks: one holder at a time across instances.
	if err := a.Lock(ctx, "issue_cert_a.example"); err != nil {
		t.Fatal(err)
	}
	if ok, _ := b.TryLock(ctx, "issue_cert_a.example"); ok {
		t.Fatal("lock taken twice")
	}
	if err := a.RenewLockLease(ctx, "issue_cert_a.example", time.Hour); err != nil || mr.TTL("t:certlock:issue_cert_a.example") != time.Hour {
		t.Fatalf("lease not renewed: %v %v", err, mr.TTL("t:certlock:issue_cert_a.example"))
	}
	a.Unlock(ctx, "issue_cert_a.example")
	if ok, _ := b.TryLock(ctx, "issue_cert_a.example"); !ok {
		t.Fatal("lock not free after Unlock")
	}
	// Redis away: reads come from the local copy.
	a.Store(ctx, "certificates/ca/b.example/b.example.crt", []byte("cert"))
	mr.Close()
	if got, err := a.Load(ctx, "certificates/ca/b.example/b.example.crt"); err != nil || string(got) != "cert" {
		t.Fatalf("local copy: %q %v", got, err)
	}
	if ok, err := a.TryLock(ctx, "x"); ok || err == nil {
		t.Fatal("a lock while Redis is away")
	}
}

func TestTicketsShared(t *testing.T) {
	mr := miniredis.RunT(t)
	seal, _ := NewSealer([]byte("0123456789abcdef0123"))
	var ka, kb [][32]byte
	a := newTestClient(t, mr).Tickets(seal, func(k [][32]byte) { ka = k })
	b := newTestClient(t, mr).Tickets(seal, func(k [][32]byte) { kb = k })
	a.Sync()
	b.Sync()
	if len(ka) != 1 || !reflect.DeepEqual(ka, kb) {
		t.Fatalf("keys differ: %x %x", ka, kb)
	}
	// Due: one instance rotates, the other picks the new list up.
	old := ka[0]
	a.rotation = 0
	a.Sync()
	b.Sync()
	if len(kb) != 2 || kb[1] != old || kb[0] == old || !reflect.DeepEqual(ka, kb) {
		t.Fatalf("after rotation: %d keys, previous kept %v", len(kb), kb[len(kb)-1] == old)
	}
	for range 5 {
		a.Sync()
	}
	b.Sync()
	if len(kb) != ticketKeys {
		t.Fatalf("%d keys kept, want %d", len(kb), ticketKeys)
	}
	// Redis away: the keys stay.
	mr.Close()
	b.Sync()
	if !reflect.DeepEqual(ka, kb) {
		t.Fatal("keys changed while Redis was away and none was due")
	}
}
