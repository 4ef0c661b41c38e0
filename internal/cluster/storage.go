package cluster

import (
	"context"
	"errors"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bsm/redislock"
	"github.com/caddyserver/certmagic"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// lockTTL is how long a certmagic lock lives without its holder refreshing
// it (every third of it): an instance that dies holding one delays the
// others by this much at most.
const lockTTL = 30 * time.Second

// Storage is certmagic's storage on Redis, shared by the fleet: the ACME
// account, certificates and keys, the locks that make one instance order
// while the others wait, and the challenge tokens (so any instance answers
// the CA). Values are sealed (AES-GCM) under their key name.
//
// Every value is also written to a local file storage, which answers reads
// while Redis is away, so that an instance restarted during an outage still
// serves the certificates it had. Locks are taken on Redis only: issuance
// and renewal wait for Redis (renewal starts 30 days early).
type Storage struct {
	c     *Client
	seal  *Sealer
	local *certmagic.FileStorage
	locks *redislock.Client
	log   *zap.Logger

	mu   sync.Mutex
	held map[string]*heldLock
}

type heldLock struct {
	lock *redislock.Lock
	stop chan struct{}
}

var (
	_ certmagic.Storage          = (*Storage)(nil)
	_ certmagic.TryLocker        = (*Storage)(nil)
	_ certmagic.LockLeaseRenewer = (*Storage)(nil)
)

// Storage returns certmagic's storage on Redis, sealed by seal, mirrored to
// the files under localDir.
func (c *Client) Storage(seal *Sealer, localDir string) *Storage {
	return &Storage{c: c, seal: seal, local: &certmagic.FileStorage{Path: localDir},
		locks: redislock.New(c.rdb), log: c.log.Named("storage"), held: map[string]*heldLock{}}
}

// String names the storage in logs.
func (s *Storage) String() string { return "redis " + s.c.String() + " " + s.c.key("certs") }

func (s *Storage) key(k string) string { return s.c.key("certs", k) }

// Store writes value to Redis and to the local copy.
func (s *Storage) Store(ctx context.Context, k string, value []byte) error {
	if err := s.local.Store(ctx, k, value); err != nil {
		s.log.Warn("local copy not written", zap.String("key", k), zap.Error(err))
	}
	sealed := s.seal.seal("certs:"+k, value)
	return s.c.call(func(ctx context.Context) error {
		return s.c.rdb.HSet(ctx, s.key(k), "v", sealed, "m", time.Now().UnixMilli()).Err()
	})
}

// Load reads from Redis; from the local copy while Redis is away.
func (s *Storage) Load(ctx context.Context, k string) ([]byte, error) {
	var sealed []byte
	err := s.c.call(func(ctx context.Context) (err error) {
		sealed, err = s.c.rdb.HGet(ctx, s.key(k), "v").Bytes()
		return err
	})
	switch {
	case errors.Is(err, redis.Nil):
		return nil, fs.ErrNotExist
	case err != nil:
		return s.local.Load(ctx, k)
	}
	return s.seal.open("certs:"+k, sealed)
}

// Delete removes k and everything under it.
func (s *Storage) Delete(ctx context.Context, k string) error {
	s.local.Delete(ctx, k)
	under, err := s.scan(k + "/")
	if err != nil {
		return err
	}
	return s.c.call(func(ctx context.Context) error {
		return s.c.rdb.Del(ctx, append(under, s.key(k))...).Err()
	})
}

// Exists reports whether k is a value or has values under it.
func (s *Storage) Exists(ctx context.Context, k string) bool {
	var n int64
	err := s.c.call(func(ctx context.Context) (err error) {
		n, err = s.c.rdb.Exists(ctx, s.key(k)).Result()
		return err
	})
	if err != nil {
		return s.local.Exists(ctx, k)
	}
	if n > 0 {
		return true
	}
	under, err := s.scan(k + "/")
	return err == nil && len(under) > 0
}

// List names the keys under path: all of them, or the next level only.
func (s *Storage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	dir := strings.TrimSuffix(path, "/") + "/"
	if path == "" {
		dir = ""
	}
	keys, err := s.scan(dir)
	if err != nil {
		return s.local.List(ctx, path, recursive)
	}
	if len(keys) == 0 {
		return nil, fs.ErrNotExist
	}
	seen := map[string]bool{}
	var out []string
	full := s.key("")
	for _, k := range keys {
		name := strings.TrimPrefix(k, full)
		if !recursive {
			rest := strings.TrimPrefix(name, dir)
			if i := strings.IndexByte(rest, '/'); i >= 0 {
				name = dir + rest[:i]
			}
		}
		if !seen[name] {
			seen[name] = true
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out, nil
}

// Stat describes k: a value, or a "directory" with values under it.
func (s *Storage) Stat(ctx context.Context, k string) (certmagic.KeyInfo, error) {
	var v []any
	err := s.c.call(func(ctx context.Context) (err error) {
		v, err = s.c.rdb.HMGet(ctx, s.key(k), "m", "v").Result()
		return err
	})
	if err != nil {
		return s.local.Stat(ctx, k)
	}
	if m, ok := v[0].(string); ok {
		ms, _ := strconv.ParseInt(m, 10, 64)
		val, _ := v[1].(string)
		return certmagic.KeyInfo{Key: k, Modified: time.UnixMilli(ms), Size: int64(len(val)), IsTerminal: true}, nil
	}
	under, err := s.scan(k + "/")
	if err != nil {
		return certmagic.KeyInfo{}, err
	}
	if len(under) == 0 {
		return certmagic.KeyInfo{}, fs.ErrNotExist
	}
	return certmagic.KeyInfo{Key: k, IsTerminal: false}, nil
}

// scan returns the full Redis keys of the values under dir (a prefix ending
// in "/", or "" for all).
func (s *Storage) scan(dir string) ([]string, error) {
	match := globEscape(s.key(dir)) + "*"
	var out []string
	err := s.c.call(func(ctx context.Context) error {
		it := s.c.rdb.Scan(ctx, 0, match, 1000).Iterator()
		for it.Next(ctx) {
			out = append(out, it.Val())
		}
		return it.Err()
	})
	return out, err
}

// globEscape quotes the characters SCAN's MATCH gives a meaning to.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[]\^`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// Lock waits until this instance holds the lock name (or ctx ends). The
// lock is refreshed while held and lapses lockTTL after its holder dies.
func (s *Storage) Lock(ctx context.Context, name string) error {
	for {
		ok, err := s.TryLock(ctx, name)
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}

// TryLock takes the lock name if it is free.
func (s *Storage) TryLock(ctx context.Context, name string) (bool, error) {
	var l *redislock.Lock
	err := s.c.call(func(cctx context.Context) (err error) {
		l, err = s.locks.Obtain(cctx, s.c.key("certlock", name), lockTTL, nil)
		if errors.Is(err, redislock.ErrNotObtained) {
			return nil
		}
		return err
	})
	if err != nil || l == nil {
		return false, err
	}
	h := &heldLock{lock: l, stop: make(chan struct{})}
	s.mu.Lock()
	s.held[name] = h
	s.mu.Unlock()
	go s.refresh(h)
	return true, nil
}

func (s *Storage) refresh(h *heldLock) {
	t := time.NewTicker(lockTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
			s.c.call(func(ctx context.Context) error { return h.lock.Refresh(ctx, lockTTL, nil) })
		}
	}
}

// Unlock releases the lock name.
func (s *Storage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h := s.held[name]
	delete(s.held, name)
	s.mu.Unlock()
	if h == nil {
		return errors.New("cluster: lock " + name + " not held")
	}
	close(h.stop)
	return s.c.call(func(ctx context.Context) error { return h.lock.Release(ctx) })
}

// RenewLockLease extends a held lock to lease from now, for an operation
// that outlasts lockTTL.
func (s *Storage) RenewLockLease(ctx context.Context, name string, lease time.Duration) error {
	s.mu.Lock()
	h := s.held[name]
	s.mu.Unlock()
	if h == nil {
		return errors.New("cluster: lock " + name + " not held")
	}
	return s.c.call(func(ctx context.Context) error { return h.lock.Refresh(ctx, lease, nil) })
}
