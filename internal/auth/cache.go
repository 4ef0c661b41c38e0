package auth

import (
	"container/list"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"sync"
	"time"
)

// CacheConfig sets the cache in front of the sources.
type CacheConfig struct {
	// TTL is how long a success is remembered; 0 turns the cache off. A
	// password changed at the source takes effect within TTL.
	TTL time.Duration
	// NegativeTTL is how long a wrong password or unknown user is
	// remembered; 0 remembers none.
	NegativeTTL time.Duration
	// MaxEntries bounds the entries (least recently used go first).
	MaxEntries int
}

// Cache remembers recent answers of a source, so that a client sending
// many messages does not cost a directory round trip each. Each source that
// asks a server gets its own. It never holds
// a password: an entry keeps HMAC-SHA256(user NUL password) under a key
// made at random when the cache is built, which is useless outside this
// process, and compares it in constant time. Temporary errors are never
// cached.
type Cache struct {
	src Source
	cfg CacheConfig
	key [32]byte

	mu      sync.Mutex
	entries map[string]*list.Element // by user
	lru     *list.List               // of *cacheEntry, most recent first
}

type cacheEntry struct {
	user    string
	mac     [sha256.Size]byte
	id      Identity
	err     error // nil: success
	expires time.Time
}

var _ Source = (*Cache)(nil)

// NewCache puts a cache in front of src; with cfg.TTL 0 it returns src.
func NewCache(src Source, cfg CacheConfig) Source {
	if cfg.TTL <= 0 && cfg.NegativeTTL <= 0 {
		return src
	}
	if cfg.MaxEntries <= 0 {
		cfg.MaxEntries = 10000
	}
	c := &Cache{src: src, cfg: cfg, entries: map[string]*list.Element{}, lru: list.New()}
	rand.Read(c.key[:]) // never fails (crypto/rand, Go 1.24+)
	return c
}

// Close closes the source behind the cache.
func (c *Cache) Close() { closeSource(c.src) }

// Len returns the number of entries.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

func (c *Cache) mac(user, password string) (m [sha256.Size]byte) {
	h := hmac.New(sha256.New, c.key[:])
	h.Write([]byte(user))
	h.Write([]byte{0})
	h.Write([]byte(password))
	h.Sum(m[:0])
	return m
}

// Authenticate implements Source.
func (c *Cache) Authenticate(ctx context.Context, user, password string) (Identity, error) {
	m := c.mac(user, password)
	if id, err, ok := c.lookup(user, m); ok {
		return id, err
	}
	id, err := c.src.Authenticate(ctx, user, password)
	switch {
	case err == nil && c.cfg.TTL > 0:
		c.store(&cacheEntry{user: user, mac: m, id: id, expires: now().Add(c.cfg.TTL)})
	case err != nil && !Temporary(err) && c.cfg.NegativeTTL > 0:
		c.store(&cacheEntry{user: user, mac: m, err: err, expires: now().Add(c.cfg.NegativeTTL)})
	case err != nil && !Temporary(err):
		c.forget(user) // a cached success for another password stays valid; this one failed
	}
	return id, err
}

// lookup returns the cached answer for exactly this user and password.
func (c *Cache) lookup(user string, m [sha256.Size]byte) (Identity, error, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el := c.entries[user]
	if el == nil {
		return Identity{}, nil, false
	}
	e := el.Value.(*cacheEntry)
	if now().After(e.expires) {
		c.lru.Remove(el)
		delete(c.entries, user)
		return Identity{}, nil, false
	}
	if !hmac.Equal(e.mac[:], m[:]) {
		return Identity{}, nil, false
	}
	c.lru.MoveToFront(el)
	if e.err != nil {
		return Identity{}, &cachedError{e.err}, true
	}
	return e.id, nil, true
}

func (c *Cache) store(e *cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.entries[e.user]; el != nil {
		el.Value = e
		c.lru.MoveToFront(el)
		return
	}
	for c.lru.Len() >= c.cfg.MaxEntries {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.entries, old.Value.(*cacheEntry).user)
	}
	c.entries[e.user] = c.lru.PushFront(e)
}

// forget drops a negative entry for user, so that the next attempt asks
// the source; a success for another password is kept only if it was one.
func (c *Cache) forget(user string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el := c.entries[user]; el != nil && el.Value.(*cacheEntry).err != nil {
		c.lru.Remove(el)
		delete(c.entries, user)
	}
}

// cachedError marks an answer that came from the cache, for the log.
type cachedError struct{ err error }

func (e *cachedError) Error() string { return e.err.Error() + " (cached)" }
func (e *cachedError) Unwrap() error { return e.err }

// Cached reports whether err is an answer remembered by a Cache.
func Cached(err error) bool {
	var ce *cachedError
	return errors.As(err, &ce)
}
