package proxy

import (
	"sync"
	"time"
)

// throttle counts AUTH failures per key ("ip:…" or "user:…") over a window.
// Its memory is bounded: past max keys the oldest entries are dropped, so a
// flood of distinct keys cannot exhaust memory (it can only forget
// offenders early, never lock out someone innocent).
type throttle struct {
	limit  int
	window time.Duration
	max    int

	mu      sync.Mutex
	entries map[string]*failures
	order   []string // insertion order, for eviction
	now     func() time.Time
}

type failures struct {
	count int
	first time.Time
}

func newThrottle(limit int, window time.Duration, max int) *throttle {
	return &throttle{limit: limit, window: window, max: max, entries: map[string]*failures{}, now: time.Now}
}

// blocked reports whether key has reached the limit within the window.
func (t *throttle) blocked(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.current(key)
	return f != nil && f.count >= t.limit
}

// fail records a failure and reports whether key is now at the limit.
func (t *throttle) fail(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	f := t.current(key)
	if f == nil {
		t.evict()
		f = &failures{first: t.now()}
		t.entries[key] = f
		t.order = append(t.order, key)
	}
	f.count++
	return f.count >= t.limit
}

// current returns key's live entry, dropping it if its window has passed.
func (t *throttle) current(key string) *failures {
	f := t.entries[key]
	if f != nil && t.now().Sub(f.first) > t.window {
		delete(t.entries, key)
		return nil
	}
	return f
}

// evict makes room for one entry: expired ones first, then the oldest.
func (t *throttle) evict() {
	if len(t.order) > 2*t.max {
		// Compact the order list of keys already deleted.
		live := t.order[:0]
		for _, k := range t.order {
			if _, ok := t.entries[k]; ok {
				live = append(live, k)
			}
		}
		t.order = live
	}
	for len(t.entries) >= t.max && len(t.order) > 0 {
		k := t.order[0]
		t.order = t.order[1:]
		delete(t.entries, k)
	}
}
