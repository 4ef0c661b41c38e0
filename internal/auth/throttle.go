package auth

import (
	"net/netip"
	"sync"
	"time"
)

// The AUTH throttle. Every password check is paid for in advance from
// failure budgets, so that attempts sent at once cannot overdraw them (a
// failure counted only after its check would let every parallel guess
// through), and the checks themselves run in a bounded number of slots
// (bcrypt is CPU). SECURITY.md ("AUTH abuse") describes the model with its
// numbers.

// maxThrottleKeys bounds each budget's table and the good-history table.
const maxThrottleKeys = 100_000

// rememberPerUser bounds the addresses remembered for one user, so that one
// account logging in from many addresses cannot push other users' history
// out of the table; the least recently seen goes first.
const rememberPerUser = 16

// authSlotWait is how long an attempt waits for a free check slot before it
// is answered 454 4.7.0: long enough to ride out a burst, short against a
// client's command timeout (RFC 5321 4.5.3.2.7 gives it minutes).
const authSlotWait = 5 * time.Second

// Verdict is the outcome of a reservation.
type Verdict int

const (
	Granted  Verdict = iota
	Spent            // the failures of the window alone reached the limit
	InFlight         // attempts still being checked hold the rest of the budget
)

type verdict = Verdict

const (
	granted  = Granted
	spent    = Spent
	inFlight = InFlight
)

// AuthBudget is one failure budget of the throttle (per address, per user
// at an address, per user from addresses without history), with the
// reserve-before-check contract of budget: Reserve pays for an attempt
// before its check, Refund gives it back, Fail turns it into a failure and
// reports whether the key reached its limit. The in-process budget is the
// default; a fleet keeps one shared store instead (Throttle.Share), and such a
// store must answer from the in-process budget it is given when it cannot
// reach its own: never Granted for want of an answer.
type AuthBudget interface {
	Reserve(key string) Verdict
	Refund(key string)
	Fail(key string) (over bool)
	Blocked(key string) bool
}

// AuthHistory is the good history that exempts an address from the per
// user budget (see history), shared like AuthBudget.
type AuthHistory interface {
	Known(user, addr string) bool
	Remember(user, addr string)
}

// AuthShare builds the shared budgets and history of a fleet around the
// in-process ones; name is "addr", "user_addr" or "user".
type AuthShare struct {
	Budget  func(name string, limit int, window time.Duration, local AuthBudget) AuthBudget
	History func(ttl time.Duration, local AuthHistory) AuthHistory
}

// Share replaces the throttle's state by the shared one sh builds, each
// around its in-process counterpart (before the throttle is used).
func (t *Throttle) Share(sh AuthShare) {
	lim := t.lim
	local := func(limit int) *budget { return newBudget(limit, lim.FailWindow, maxThrottleKeys) }
	if sh.Budget != nil {
		t.addr = sh.Budget("addr", lim.MaxFailures, lim.FailWindow, local(lim.MaxFailures))
		t.userAddr = sh.Budget("user_addr", lim.MaxFailures, lim.FailWindow, local(lim.MaxFailures))
		t.user = sh.Budget("user", lim.UserMaxFailures, lim.FailWindow, local(lim.UserMaxFailures))
	}
	if sh.History != nil {
		t.history = sh.History(lim.Remember, newHistory(lim.Remember, maxThrottleKeys))
	}
}

// The in-process budget and history as AuthBudget and AuthHistory.
var (
	_ AuthBudget  = (*budget)(nil)
	_ AuthHistory = (*history)(nil)
)

func (b *budget) Reserve(key string) Verdict    { return b.reserve(key) }
func (b *budget) Refund(key string)             { b.refund(key) }
func (b *budget) Fail(key string) bool          { return b.fail(key) }
func (b *budget) Blocked(key string) bool       { return b.blocked(key) }
func (h *history) Known(user, addr string) bool { return h.known(user, addr) }
func (h *history) Remember(user, addr string)   { h.remember(user, addr) }

// budget counts AUTH failures per key over a window; an attempt reserves its
// failure before the check and gets it back if the check succeeds. Memory is
// bounded to max keys: when full, expired entries go first, then the oldest
// entries under the limit, and only then the oldest spent ones, so that a
// flood of fresh keys (one failure each) cannot cheaply evict a spent
// budget to reset it.
type budget struct {
	limit  int
	window time.Duration
	max    int

	mu      sync.Mutex
	entries map[string]*tally
	under   []queued // entries under the limit, in insertion order
	spent   []queued // entries that reached the limit, in that order
	now     func() time.Time
}

type tally struct {
	failed  int // failures counted in the window
	pending int // reservations not yet settled
	first   time.Time
	isSpent bool // queued in spent
}

// queued names an entry in an eviction queue; the pointer tells a stale
// item (its entry deleted or replaced) from a live one.
type queued struct {
	key string
	t   *tally
}

func newBudget(limit int, window time.Duration, max int) *budget {
	return &budget{limit: limit, window: window, max: max, entries: map[string]*tally{}, now: time.Now}
}

// reserve takes one attempt from key's budget, unless its failures or the
// attempts in flight have used it up.
func (b *budget) reserve(key string) verdict {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.current(key)
	if t == nil {
		b.evict()
		t = &tally{first: b.now()}
		b.entries[key] = t
		b.under = append(b.under, queued{key, t})
	}
	switch {
	case t.failed >= b.limit:
		return spent
	case t.failed+t.pending >= b.limit:
		return inFlight
	}
	t.pending++
	return granted
}

// refund gives a reserved attempt back (it succeeded, or no verdict was
// reached).
func (b *budget) refund(key string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if t := b.current(key); t != nil && t.pending > 0 {
		t.pending--
	}
}

// fail turns a reserved attempt into a failure and reports whether key has
// now reached the limit. Should the entry have gone meanwhile (window over,
// evicted), the failure starts a new one.
func (b *budget) fail(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.current(key)
	if t == nil {
		b.evict()
		t = &tally{first: b.now()}
		b.entries[key] = t
		b.under = append(b.under, queued{key, t})
	} else if t.pending > 0 {
		t.pending--
	}
	t.failed++
	if t.failed >= b.limit && !t.isSpent {
		t.isSpent = true
		b.spent = append(b.spent, queued{key, t})
	}
	return t.failed >= b.limit
}

// blocked reports whether key's failures have reached the limit.
func (b *budget) blocked(key string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	t := b.current(key)
	return t != nil && t.failed >= b.limit
}

// current returns key's live entry, dropping it if its window has passed.
func (b *budget) current(key string) *tally {
	t := b.entries[key]
	if t != nil && b.expired(t) {
		delete(b.entries, key)
		return nil
	}
	return t
}

func (b *budget) expired(t *tally) bool { return b.now().Sub(t.first) > b.window }

// live reports whether q still names the entry it was queued for.
func (b *budget) live(q queued) bool { return b.entries[q.key] == q.t }

// evict makes room for one entry.
func (b *budget) evict() {
	b.under = b.compact(b.under, false)
	b.spent = b.compact(b.spent, true)
	for len(b.entries) >= b.max {
		switch {
		case len(b.spent) > 0 && (!b.live(b.spent[0]) || b.expired(b.spent[0].t)):
			b.drop(&b.spent)
		case len(b.under) > 0:
			if q := b.under[0]; b.live(q) && q.t.isSpent {
				b.under = b.under[1:] // queued in spent as well
				continue
			}
			b.drop(&b.under)
		case len(b.spent) > 0:
			b.drop(&b.spent)
		default:
			return
		}
	}
}

// drop deletes the entry at the front of queue, if it is still the one
// queued, and pops it.
func (b *budget) drop(queue *[]queued) {
	q := (*queue)[0]
	*queue = (*queue)[1:]
	if b.live(q) {
		delete(b.entries, q.key)
	}
}

// compact rebuilds a queue that has grown past twice the table's size with
// stale items (deleted, replaced or moved entries).
func (b *budget) compact(queue []queued, spent bool) []queued {
	if len(queue) <= 2*b.max {
		return queue
	}
	out := make([]queued, 0, len(b.entries))
	for _, q := range queue {
		if b.live(q) && q.t.isSpent == spent {
			out = append(out, q)
		}
	}
	return out
}

// history remembers the addresses each user logged in from, for ttl since
// the last success. At most max users (oldest first out) and
// rememberPerUser addresses per user are kept. Only a successful login adds
// to it, so filling it takes valid passwords.
type history struct {
	ttl time.Duration
	max int

	mu    sync.Mutex
	users map[string]*seen
	order []string // users in insertion order, for eviction
	now   func() time.Time
}

type seen struct {
	addrs []seenAddr
}

type seenAddr struct {
	addr string
	at   time.Time
}

func newHistory(ttl time.Duration, max int) *history {
	return &history{ttl: ttl, max: max, users: map[string]*seen{}, now: time.Now}
}

// known reports whether user logged in from addr within ttl.
func (h *history) known(user, addr string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.users[user]
	if s == nil {
		return false
	}
	for _, a := range s.addrs {
		if a.addr == addr {
			return h.now().Sub(a.at) <= h.ttl
		}
	}
	return false
}

// remember records a successful login of user from addr.
func (h *history) remember(user, addr string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	s := h.users[user]
	if s == nil {
		h.evict()
		s = &seen{}
		h.users[user] = s
		h.order = append(h.order, user)
	}
	oldest := -1
	for i, a := range s.addrs {
		if a.addr == addr {
			s.addrs[i].at = now
			return
		}
		if oldest < 0 || a.at.Before(s.addrs[oldest].at) {
			oldest = i
		}
	}
	if len(s.addrs) >= rememberPerUser {
		s.addrs[oldest] = seenAddr{addr, now}
		return
	}
	s.addrs = append(s.addrs, seenAddr{addr, now})
}

// evict makes room for one user: those whose addresses have all expired,
// then the oldest.
func (h *history) evict() {
	if len(h.order) > 2*h.max {
		live := h.order[:0]
		for _, u := range h.order {
			if _, ok := h.users[u]; ok {
				live = append(live, u)
			}
		}
		h.order = live
	}
	for len(h.users) >= h.max && len(h.order) > 0 {
		u := h.order[0]
		h.order = h.order[1:]
		delete(h.users, u)
	}
}

// slots bounds the password checks running at once. A share of them is
// kept for addresses a user logged in from before, so that a spray from
// fresh addresses cannot take every slot from the real users.
type slots struct {
	all   chan struct{}
	fresh chan struct{} // nil: no share kept (a single slot)
	wait  time.Duration
}

func newSlots(n int, wait time.Duration) *slots {
	s := &slots{all: make(chan struct{}, n), wait: wait}
	if keep := n / 4; n > 1 {
		if keep == 0 {
			keep = 1
		}
		s.fresh = make(chan struct{}, n-keep)
	}
	return s
}

// acquire waits up to the slot wait for a slot; known is an address with
// good history for the user. It returns the release function, or false.
func (s *slots) acquire(known bool) (func(), bool) {
	timer := time.NewTimer(s.wait)
	defer timer.Stop()
	fresh := s.fresh
	if known {
		fresh = nil
	}
	if fresh != nil {
		select {
		case fresh <- struct{}{}:
		case <-timer.C:
			return nil, false
		}
	}
	select {
	case s.all <- struct{}{}:
	case <-timer.C:
		if fresh != nil {
			<-fresh
		}
		return nil, false
	}
	return func() {
		<-s.all
		if fresh != nil {
			<-fresh
		}
	}, true
}

// Throttle is the whole throttle: failure budgets per address, per user
// at an address and per user across addresses without good history, the
// good history itself, and the check slots. It is safe for concurrent use
// and outlives reloads of the credential sources.
type Throttle struct {
	lim      ThrottleLimits
	addr     AuthBudget // key: AddrKey
	userAddr AuthBudget // key: user NUL AddrKey
	user     AuthBudget // key: user; spent only for addresses without good history
	history  AuthHistory
	slots    *slots
}

// ThrottleLimits are the throttle's numbers; proxy.Limits documents them
// (auth_max_failures and the keys after it in the README).
type ThrottleLimits struct {
	MaxFailures     int           // failures per address, and per user at an address, in FailWindow
	UserMaxFailures int           // failures per user from addresses without good history
	FailWindow      time.Duration // how long a failure is remembered
	Remember        time.Duration // how long good history lasts
	MaxConcurrent   int           // password checks at once
}

// NewThrottle builds a throttle; every limit must be positive.
func NewThrottle(l ThrottleLimits) *Throttle {
	return &Throttle{
		lim:      l,
		addr:     newBudget(l.MaxFailures, l.FailWindow, maxThrottleKeys),
		userAddr: newBudget(l.MaxFailures, l.FailWindow, maxThrottleKeys),
		user:     newBudget(l.UserMaxFailures, l.FailWindow, maxThrottleKeys),
		history:  newHistory(l.Remember, maxThrottleKeys),
		slots:    newSlots(l.MaxConcurrent, authSlotWait),
	}
}

// AddrKey is the address a budget counts: the address itself for IPv4,
// its /64 for IPv6, since one subscriber is commonly given a whole /64
// (RFC 6177) and could otherwise guess from 2^64 addresses.
func AddrKey(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Is4() {
		return ip.String()
	}
	p, _ := ip.Prefix(64)
	return p.String()
}

// Reservation is one attempt paid for in every budget that applies to it.
type Reservation struct {
	l                    *Throttle
	addr, userAddr, user string // user "": not charged to the user budget
}

// Refusal says why an attempt was refused before any check.
type Refusal struct {
	Why    string
	HangUp bool // 421 and close: this address (for this user) is spent
}

// reserve charges one attempt of user from addr; known means addr has good
// history for user, which exempts it from the user budget.
func (l *Throttle) Reserve(user, addr string, known bool) (*Reservation, *Refusal) {
	r := &Reservation{l: l, addr: addr, userAddr: user + "\x00" + addr}
	switch l.addr.Reserve(r.addr) {
	case spent:
		return nil, &Refusal{"address throttled", true}
	case inFlight:
		return nil, &Refusal{"address has attempts in flight", false}
	}
	switch l.userAddr.Reserve(r.userAddr) {
	case spent:
		l.addr.Refund(r.addr)
		return nil, &Refusal{"user throttled at this address", true}
	case inFlight:
		l.addr.Refund(r.addr)
		return nil, &Refusal{"user has attempts in flight at this address", false}
	}
	if known {
		return r, nil
	}
	switch l.user.Reserve(user) {
	case spent:
		r.Refund()
		return nil, &Refusal{"user throttled at new addresses", false}
	case inFlight:
		r.Refund()
		return nil, &Refusal{"user has attempts in flight at new addresses", false}
	}
	r.user = user
	return r, nil
}

// refund gives the attempt back to every budget it was charged to.
func (r *Reservation) Refund() {
	r.l.addr.Refund(r.addr)
	r.l.userAddr.Refund(r.userAddr)
	if r.user != "" {
		r.l.user.Refund(r.user)
	}
}

// fail counts the attempt as a failure; over means the address, or the user
// at it, has now reached its limit (the per-user budget only refuses later
// attempts from new addresses, it never ends this session).
func (r *Reservation) Fail() (over bool) {
	over = r.l.addr.Fail(r.addr)
	if r.l.userAddr.Fail(r.userAddr) {
		over = true
	}
	if r.user != "" {
		r.l.user.Fail(r.user)
	}
	return over
}

// FailAddr counts a failure that has no user to charge (a malformed
// exchange, a bad user name) against the address alone, if its budget
// allows one more.
func (l *Throttle) FailAddr(addr string) (over bool, ref *Refusal) {
	switch l.addr.Reserve(addr) {
	case spent:
		return false, &Refusal{"address throttled", true}
	case inFlight:
		return false, &Refusal{"address has attempts in flight", false}
	}
	return l.addr.Fail(addr), nil
}

// Blocked reports whether addr's failures have reached the limit, so that
// an AUTH from it can be refused before credentials are read.
func (l *Throttle) Blocked(addr string) bool { return l.addr.Blocked(addr) }

// Known reports whether user logged in from addr recently (good history).
func (l *Throttle) Known(user, addr string) bool { return l.history.Known(user, addr) }

// Remember records a successful login of user from addr.
func (l *Throttle) Remember(user, addr string) { l.history.Remember(user, addr) }

// Acquire waits for a check slot; known is an address with good history for
// the user. It returns the release function, or false when no slot came
// free in time.
func (l *Throttle) Acquire(known bool) (release func(), ok bool) { return l.slots.acquire(known) }
