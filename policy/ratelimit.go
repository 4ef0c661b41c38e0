package policy

import (
	"container/list"
	"fmt"
	"math"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// rateKind says what a rate limit counts per.
type rateKind uint8

const (
	perUser rateKind = iota + 1
	perClientIP
)

// rateLimit is one entry of rate_limits.
type rateLimit struct {
	name, source string
	per          rateKind
	window       time.Duration
	messages     int // 0: not counted
	recipients   int
	sel          selector
	conds        []cond
}

const (
	countMessages = iota
	countRecipients
)

// DefaultMaxCounterKeys bounds the memory of Counters from NewCounters(0):
// about 100 bytes per key.
const DefaultMaxCounterKeys = 100_000

// Counters hold the state of rate limits: for each rate_limits entry and
// user or client IP, the messages and recipients seen in the current and the
// previous window. The count over the last window is estimated from both
// (a sliding window), so a burst at a window boundary is not let through
// twice.
//
// Counters are kept apart from Policy so that they survive reloads: a
// counter is identified by the entry's name and the user or IP, so an entry
// keeps its counts across a reload as long as its name stays. Memory is
// bounded: past the maximum number of keys, the least recently used key is
// forgotten. IPv6 clients are counted per /64, since one host usually
// holds a whole /64.
//
// Counters are safe for concurrent use.
type Counters struct {
	mu    sync.Mutex
	max   int
	m     map[rateKey]*list.Element
	lru   list.List // of *counter, most recently used first
	store RateStore // nil: the counts are this process's own
}

// RateStore keeps the counts of rate limits for a fleet of instances, so
// that a limit holds across them. Take checks every limit of one MAIL or
// RCPT and, if none is reached, counts one against each, in one atomic
// step; refused is the index of the first limit reached (-1: none) and wait
// how long until it has room. An error means the store did not answer: the
// in-process counters decide instead, so a limit never lapses.
type RateStore interface {
	Take(checks []RateCheck) (refused int, wait time.Duration, err error)
}

// RateCheck is one rate limit applied to one user or client address.
type RateCheck struct {
	Limit  string        // the rate_limits entry's name
	Kind   string        // "messages" or "recipients"
	Who    string        // "user:" + the user, or "ip:" + the address (IPv6: its /64)
	Max    int           // at most Max per Window
	Window time.Duration // the entry's window
}

// Share makes the limits count in st (see RateStore); nil: in this process.
func (c *Counters) Share(st RateStore) { c.store = st }

type rateKey struct {
	limit string
	user  string
	ip    netip.Addr
}

type counter struct {
	key   rateKey
	start time.Time // start of the current window
	cur   [2]uint32
	prev  [2]uint32
}

// NewCounters returns empty counters that remember at most maxKeys keys
// (DefaultMaxCounterKeys if maxKeys <= 0).
func NewCounters(maxKeys int) *Counters {
	if maxKeys <= 0 {
		maxKeys = DefaultMaxCounterKeys
	}
	return &Counters{max: maxKeys, m: make(map[rateKey]*list.Element)}
}

// Len returns the number of keys held.
func (c *Counters) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// Message is called at MAIL FROM: it checks the messages limits of p that
// apply to the session and, if none is reached, counts one message against
// each. A limit reached gives TempFail with "450 4.7.1" and a hint of when to
// try again. Counting at MAIL (as Postfix's anvil does) means a refused or
// abandoned transaction still counts.
func (c *Counters) Message(p *Policy, s Session, now time.Time) Decision {
	return c.take(p, s, now, countMessages)
}

// Recipient is called for a RCPT that the policy accepted: it checks and
// counts the recipients limits, like Message.
func (c *Counters) Recipient(p *Policy, s Session, now time.Time) Decision {
	return c.take(p, s, now, countRecipients)
}

func (c *Counters) take(p *Policy, s Session, now time.Time, kind int) Decision {
	ok := Decision{Action: Accept, Reply: replyRecipientOK, Rule: RuleNoRateLimit, Source: p.file}
	if kind == countMessages {
		ok.Reply = replySenderOK
	}
	if len(p.rates) == 0 {
		return ok
	}
	ev := p.newEval(s, Address{}, Address{})
	// Usually a handful of entries apply: arrays on the stack avoid
	// allocating; append grows past them if needed.
	var applyBuf [8]*rateLimit
	var keysBuf [8]rateKey
	apply, keys := applyBuf[:0], keysBuf[:0]
	for _, r := range p.rates {
		limit := r.messages
		if kind == countRecipients {
			limit = r.recipients
		}
		if limit == 0 || !matchConds(r.conds, &ev) {
			continue
		}
		k, applies := r.key(s, ev.ip)
		if !applies {
			continue
		}
		keys = append(keys, k)
		apply = append(apply, r)
	}
	if len(apply) == 0 {
		return ok
	}
	if c.store != nil {
		if d, answered := c.takeShared(apply, keys, kind); answered {
			if d.Action != Accept {
				return d
			}
			// Counted here too, so that this instance's own counts hold
			// should the store go away.
			c.mu.Lock()
			defer c.mu.Unlock()
			c.count(apply, keys, kind, now)
			return ok
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, r := range apply {
		e := c.m[keys[i]]
		if e == nil {
			continue
		}
		ct := e.Value.(*counter)
		limit := r.messages
		if kind == countRecipients {
			limit = r.recipients
		}
		ct.roll(now, r.window)
		if est := ct.estimate(now, r.window, kind); est+1 > float64(limit) {
			wait := ct.wait(now, r.window, kind, limit)
			return Decision{Action: TempFail, Reply: rateReply(r, kind, limit, keys[i], wait), Rule: r.name, Source: r.source}
		}
	}
	c.count(apply, keys, kind, now)
	return ok
}

// count counts one against each limit in apply; c.mu is held.
func (c *Counters) count(apply []*rateLimit, keys []rateKey, kind int, now time.Time) {
	for i, r := range apply {
		ct := c.get(keys[i], now)
		ct.roll(now, r.window)
		if ct.cur[kind] < math.MaxUint32 {
			ct.cur[kind]++
		}
	}
}

// takeShared asks the store; answered is false when it could not.
func (c *Counters) takeShared(apply []*rateLimit, keys []rateKey, kind int) (d Decision, answered bool) {
	checks := make([]RateCheck, len(apply))
	what := "messages"
	if kind == countRecipients {
		what = "recipients"
	}
	for i, r := range apply {
		limit := r.messages
		if kind == countRecipients {
			limit = r.recipients
		}
		who := "ip:" + keys[i].ip.String()
		if r.per == perUser {
			who = "user:" + keys[i].user
		}
		checks[i] = RateCheck{Limit: r.name, Kind: what, Who: who, Max: limit, Window: r.window}
	}
	i, wait, err := c.store.Take(checks)
	if err != nil {
		return Decision{}, false
	}
	if i < 0 {
		return Decision{Action: Accept}, true
	}
	if wait < time.Second {
		wait = time.Second
	}
	r := apply[i]
	return Decision{Action: TempFail, Reply: rateReply(r, kind, checks[i].Max, keys[i], wait.Round(time.Second)), Rule: r.name, Source: r.source}, true
}

// key is the counter key of r for a session; false if r does not apply
// (a per-user limit for a client that has not logged in).
func (r *rateLimit) key(s Session, ip netip.Addr) (rateKey, bool) {
	switch r.per {
	case perUser:
		if s.User == "" {
			return rateKey{}, false
		}
		return rateKey{limit: r.name, user: s.User}, true
	default:
		if !ip.IsValid() {
			return rateKey{}, false
		}
		if ip.Is6() {
			ip = netip.PrefixFrom(ip, 64).Masked().Addr()
		}
		return rateKey{limit: r.name, ip: ip}, true
	}
}

// get returns the counter for k, creating it (and forgetting the least
// recently used key if full). c.mu is held.
func (c *Counters) get(k rateKey, now time.Time) *counter {
	if e := c.m[k]; e != nil {
		c.lru.MoveToFront(e)
		return e.Value.(*counter)
	}
	for len(c.m) >= c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.m, old.Value.(*counter).key)
	}
	ct := &counter{key: k, start: now}
	c.m[k] = c.lru.PushFront(ct)
	return ct
}

// roll moves the window forward to now.
func (ct *counter) roll(now time.Time, w time.Duration) {
	el := now.Sub(ct.start)
	if el < w {
		if el < 0 { // clock went back: start over
			ct.start = now
		}
		return
	}
	n := el / w
	if n == 1 {
		ct.prev = ct.cur
	} else {
		ct.prev = [2]uint32{}
	}
	ct.cur = [2]uint32{}
	ct.start = ct.start.Add(n * w)
}

// estimate is the count over the last window: all of the current window
// plus the part of the previous one that still overlaps it.
func (ct *counter) estimate(now time.Time, w time.Duration, kind int) float64 {
	frac := float64(now.Sub(ct.start)) / float64(w)
	return float64(ct.prev[kind])*(1-frac) + float64(ct.cur[kind])
}

// wait is how long until one more would fit under limit.
func (ct *counter) wait(now time.Time, w time.Duration, kind, limit int) time.Duration {
	room := float64(limit - 1)
	cur, prev := float64(ct.cur[kind]), float64(ct.prev[kind])
	el := now.Sub(ct.start)
	var d time.Duration
	if cur > room {
		// Only the next window can help: there the estimate is
		// cur*(1-e/w), which must fall to room.
		d = w - el + time.Duration(float64(w)*(1-room/cur))
	} else if prev > 0 {
		d = time.Duration(float64(w)*(1-(room-cur)/prev)) - el
	}
	if d < time.Second {
		d = time.Second
	}
	return d.Round(time.Second)
}

func rateReply(r *rateLimit, kind, limit int, k rateKey, wait time.Duration) Reply {
	what := "messages"
	if kind == countRecipients {
		what = "recipients"
	}
	who := "from " + k.ip.String()
	switch {
	case r.per == perUser:
		who = "for user " + k.user
	case k.ip.Is6():
		who = "from " + netip.PrefixFrom(k.ip, 64).String()
	}
	return Reply{450, [3]int{4, 7, 1}, fmt.Sprintf("Rate limit reached: too many %s %s (at most %d per %s), try again in %s",
		what, who, limit, shortDuration(r.window), shortDuration(wait))}
}

// shortDuration formats 1h0m0s as 1h, 90s as 1m30s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
