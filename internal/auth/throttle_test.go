package auth

import (
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a settable time for the throttle's tables.
type fakeClock struct{ t time.Time }

func newFakeClock() *fakeClock               { return &fakeClock{time.Unix(1_000_000, 0)} }
func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }
func budgetAt(c *fakeClock, limit, max int) *budget {
	b := newBudget(limit, time.Minute, max)
	b.now = c.now
	return b
}

func TestBudgetLimitAndWindow(t *testing.T) {
	clk := newFakeClock()
	b := budgetAt(clk, 3, 100)
	for i := 0; i < 2; i++ {
		if v := b.reserve("a"); v != granted {
			t.Fatalf("Reservation %d: %v", i+1, v)
		}
		if b.fail("a") {
			t.Fatalf("over the limit after %d failures of 3", i+1)
		}
	}
	if b.blocked("a") {
		t.Fatal("blocked after 2 of 3")
	}
	b.reserve("a")
	if !b.fail("a") || !b.blocked("a") || b.reserve("a") != spent {
		t.Fatal("not spent at the limit")
	}
	if b.blocked("b") || b.reserve("b") != granted {
		t.Fatal("another key charged")
	}
	clk.advance(59 * time.Second)
	if !b.blocked("a") {
		t.Fatal("unblocked inside the window")
	}
	clk.advance(2 * time.Second)
	if b.blocked("a") || b.reserve("a") != granted {
		t.Fatal("still spent after the window")
	}
	if b.fail("a") {
		t.Fatal("count not restarted after the window")
	}
}

// Reservations cannot overdraw the budget: however many attempts run at
// once, at most limit are granted; a refund (a success) gives one back,
// a failure keeps it.
func TestBudgetReservationsCannotOverdraw(t *testing.T) {
	clk := newFakeClock()
	b := budgetAt(clk, 5, 100)
	var got atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 200; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if b.reserve("k") == granted {
				got.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := got.Load(); n != 5 {
		t.Fatalf("%d of 200 simultaneous reservations granted, want 5", n)
	}
	if v := b.reserve("k"); v != inFlight {
		t.Fatalf("with 5 in flight: %v, want inFlight", v)
	}
	b.refund("k") // one succeeded
	if v := b.reserve("k"); v != granted {
		t.Fatalf("after a refund: %v, want granted", v)
	}
	for i := 0; i < 5; i++ {
		b.fail("k")
	}
	if v := b.reserve("k"); v != spent {
		t.Fatalf("after 5 failures: %v, want spent", v)
	}
}

// Memory is bounded however many distinct keys fail, also when keys expire
// and come back.
func TestBudgetBoundedMemory(t *testing.T) {
	clk := newFakeClock()
	b := budgetAt(clk, 3, 100)
	check := func(what string, i int) {
		t.Helper()
		if len(b.entries) > 100 || len(b.under) > 2*100+1 || len(b.spent) > 2*100+1 {
			t.Fatalf("%s %d: %d entries, %d+%d queued", what, i, len(b.entries), len(b.under), len(b.spent))
		}
	}
	for i := 0; i < 50_000; i++ {
		k := fmt.Sprintf("user:%d", i)
		b.reserve(k)
		b.fail(k)
		if i%3 == 0 { // some reach the limit
			b.fail(k)
			b.fail(k)
		}
		if i%1000 == 0 {
			clk.advance(time.Second)
		}
		check("keys", i)
	}
	for i := 0; i < 50_000; i++ {
		b.fail(fmt.Sprintf("ip:%d", i%50))
		clk.advance(2 * time.Minute)
		check("churn", i)
	}
	if cap(b.under) > 64*100 || cap(b.spent) > 64*100 {
		t.Errorf("queues grew to %d and %d", cap(b.under), cap(b.spent))
	}
}

// A spent key survives a flood of fresh keys (one failure each) far larger
// than the table: they evict each other first, so a spent budget cannot be
// reset cheaply. Only spent keys push out spent keys.
func TestBudgetEvictionKeepsSpentKeys(t *testing.T) {
	clk := newFakeClock()
	b := budgetAt(clk, 3, 100)
	for i := 0; i < 3; i++ {
		b.reserve("victim")
		b.fail("victim")
	}
	for i := 0; i < 10_000; i++ {
		k := fmt.Sprintf("fresh:%d", i)
		b.reserve(k)
		b.fail(k)
	}
	if !b.blocked("victim") {
		t.Fatal("a flood of fresh keys evicted the spent one")
	}
	for i := 0; i < 100; i++ {
		k := fmt.Sprintf("spent:%d", i)
		for j := 0; j < 3; j++ {
			b.fail(k)
		}
	}
	if b.blocked("victim") {
		t.Error("table full of newer spent keys, yet the oldest was kept: memory not bounded by the oldest-first rule")
	}
	// Expired spent entries go before live ones.
	clk.advance(2 * time.Minute)
	b.fail("new-spent")
	b.fail("new-spent")
	b.fail("new-spent")
	for i := 0; i < 500; i++ {
		b.fail(fmt.Sprintf("late:%d", i))
	}
	if !b.blocked("new-spent") {
		t.Error("a live spent key was evicted while expired ones were left")
	}
}

// An offender is still blocked while the table churns with fewer keys than
// its capacity.
func TestBudgetKeepsOffenderUnderCapacity(t *testing.T) {
	b := newBudget(3, time.Minute, 1000)
	for i := 0; i < 3; i++ {
		b.fail("ip:bad")
	}
	for i := 0; i < 500; i++ {
		b.fail(fmt.Sprintf("user:%d", i))
	}
	if !b.blocked("ip:bad") {
		t.Error("offender forgotten while the table was half full")
	}
}

// The limiter as a whole: the address and the user at it are spent at
// auth_max_failures with a hang-up; the per-user budget refuses only new
// addresses, without a hang-up, and leaves an address with good history
// alone.
func TestAuthLimitsBudgets(t *testing.T) {
	clk := newFakeClock()
	l := NewThrottle(ThrottleLimits{MaxFailures: 2, UserMaxFailures: 3, FailWindow: time.Minute,
		Remember: time.Hour, MaxConcurrent: 4})
	for _, b := range []AuthBudget{l.addr, l.userAddr, l.user} {
		b.(*budget).now = clk.now
	}
	l.history.(*history).now = clk.now

	l.history.Remember("bob", "10.0.0.1")
	// Guessers at three new addresses spend bob's per-user budget.
	for _, a := range []string{"10.0.0.2", "10.0.0.3", "10.0.0.4"} {
		r, ref := l.Reserve("bob", a, l.history.Known("bob", a))
		if ref != nil {
			t.Fatalf("guess from %s refused: %s", a, ref.Why)
		}
		if r.Fail() {
			t.Fatalf("one failure from %s ended the session", a)
		}
	}
	_, ref := l.Reserve("bob", "10.0.0.5", false)
	if ref == nil || ref.HangUp {
		t.Fatalf("new address after the user budget: %+v, want a refusal without hang-up", ref)
	}
	// bob's remembered address is checked normally.
	r, ref := l.Reserve("bob", "10.0.0.1", l.history.Known("bob", "10.0.0.1"))
	if ref != nil {
		t.Fatalf("remembered address refused: %s", ref.Why)
	}
	r.Refund()
	// Another user at a guessing address is untouched.
	if _, ref := l.Reserve("alice", "10.0.0.2", false); ref != nil {
		t.Fatalf("alice at a guessing address refused: %s", ref.Why)
	}

	// Two failures from one address: spent, with a hang-up, for every user.
	for i := 0; i < 2; i++ {
		r, ref := l.Reserve(fmt.Sprintf("u%d", i), "10.0.1.1", false)
		if ref != nil {
			t.Fatalf("guess %d refused: %s", i, ref.Why)
		}
		if over := r.Fail(); over != (i == 1) {
			t.Fatalf("guess %d: over=%v", i, over)
		}
	}
	if _, ref := l.Reserve("alice", "10.0.1.1", true); ref == nil || !ref.HangUp {
		t.Fatalf("spent address: %+v, want a hang-up", ref)
	}
	// A refused attempt charged nothing: the user budgets it passed are intact.
	if l.userAddr.Blocked("alice\x0010.0.1.1") {
		t.Fatal("a refused attempt was charged")
	}
	// The window passes: all budgets are back.
	clk.advance(2 * time.Minute)
	if _, ref := l.Reserve("bob", "10.0.0.5", false); ref != nil {
		t.Fatalf("after the window: %s", ref.Why)
	}
	// Good history expires after AuthRemember.
	clk.advance(2 * time.Hour)
	if l.history.Known("bob", "10.0.0.1") {
		t.Fatal("address remembered past auth_remember")
	}
}

// The good-history table is bounded in users and in addresses per user;
// one user's many addresses push out only that user's oldest.
func TestHistoryBounded(t *testing.T) {
	clk := newFakeClock()
	h := newHistory(time.Hour, 50)
	h.now = clk.now
	h.remember("bob", "home")
	for i := 0; i < 1000; i++ {
		clk.advance(time.Second)
		h.remember("mallory", fmt.Sprintf("10.%d", i))
		if i%100 == 0 {
			h.remember("bob", "home") // bob keeps logging in from home
		}
	}
	if n := len(h.users["mallory"].addrs); n != rememberPerUser {
		t.Fatalf("mallory has %d remembered addresses, want %d", n, rememberPerUser)
	}
	if !h.known("bob", "home") {
		t.Fatal("another user's addresses pushed out bob's")
	}
	for i := 0; i < 10_000; i++ {
		h.remember(fmt.Sprintf("user%d", i), "a")
		if len(h.users) > 50 || len(h.order) > 2*50+1 {
			t.Fatalf("after %d users: %d users, %d in order", i+1, len(h.users), len(h.order))
		}
	}
}

// IPv6 addresses are counted by their /64, IPv4 ones (also mapped) alone.
func TestAddrKey(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.7":            "192.0.2.7",
		"::ffff:192.0.2.7":     "192.0.2.7",
		"2001:db8:1:2:3:4:5:6": "2001:db8:1:2::/64",
		"2001:db8:1:2:ffff::1": "2001:db8:1:2::/64",
		"::1":                  "::/64",
	} {
		if got := AddrKey(netip.MustParseAddr(in)); got != want {
			t.Errorf("AddrKey(%s) = %s, want %s", in, got, want)
		}
	}
}

// No more than n checks run at once, whatever the number of attempts; an
// attempt that finds no slot within the wait is turned away.
func TestSlotsBoundConcurrentChecks(t *testing.T) {
	const n = 3
	s := newSlots(n, 5*time.Second)
	var running, most atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 60; i++ {
		wg.Add(1)
		go func(known bool) {
			defer wg.Done()
			release, ok := s.acquire(known)
			if !ok {
				t.Error("no slot within the wait")
				return
			}
			r := running.Add(1)
			for {
				m := most.Load()
				if r <= m || most.CompareAndSwap(m, r) {
					break
				}
			}
			time.Sleep(time.Millisecond)
			running.Add(-1)
			release()
		}(i%5 == 0)
	}
	wg.Wait()
	if m := most.Load(); m > n {
		t.Fatalf("%d checks ran at once, want at most %d", m, n)
	}

	short := newSlots(2, 50*time.Millisecond)
	r1, _ := short.acquire(true)
	r2, _ := short.acquire(true)
	if _, ok := short.acquire(true); ok {
		t.Fatal("a third slot out of two")
	}
	r1()
	r2()
}

// A share of the slots is kept for addresses with good history: fresh
// addresses holding all theirs do not keep a known one waiting.
func TestSlotsKeepShareForKnownAddresses(t *testing.T) {
	s := newSlots(8, 50*time.Millisecond)
	var held []func()
	for {
		r, ok := s.acquire(false)
		if !ok {
			break
		}
		held = append(held, r)
	}
	if len(held) != 6 {
		t.Fatalf("fresh addresses got %d of 8 slots, want 6", len(held))
	}
	r, ok := s.acquire(true)
	if !ok {
		t.Fatal("a known address found no slot while fresh ones held their share")
	}
	r()
	for _, r := range held {
		r()
	}
}
