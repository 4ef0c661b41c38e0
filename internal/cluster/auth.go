package cluster

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tlsguard/tlsguard/internal/auth"
)

// The AUTH budgets on Redis. A budget is a hash per key with the failures
// of the window (f) and the reservations not yet settled (p); it expires a
// window after its first attempt, as the in-process budget does. Each step
// is one script, so that attempts at several instances at once cannot
// overdraw it (reserve before check).

var budgetReserve = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'f', 'p')
local f, p = tonumber(v[1] or '0'), tonumber(v[2] or '0')
local limit = tonumber(ARGV[1])
if f >= limit then return 1 end
if f + p >= limit then return 2 end
redis.call('HINCRBY', KEYS[1], 'p', 1)
if v[1] == false and v[2] == false then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0`)

var budgetRefund = redis.NewScript(`
local p = tonumber(redis.call('HGET', KEYS[1], 'p') or '0')
if p > 0 then redis.call('HINCRBY', KEYS[1], 'p', -1) end
return 0`)

var budgetFail = redis.NewScript(`
local fresh = redis.call('EXISTS', KEYS[1]) == 0
local p = tonumber(redis.call('HGET', KEYS[1], 'p') or '0')
if p > 0 then redis.call('HINCRBY', KEYS[1], 'p', -1) end
local f = redis.call('HINCRBY', KEYS[1], 'f', 1)
if fresh then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if f >= tonumber(ARGV[1]) then return 1 end
return 0`)

// AuthShare is the proxy's AUTH throttle on Redis.
func (c *Client) AuthShare() auth.AuthShare {
	return auth.AuthShare{
		Budget: func(name string, limit int, window time.Duration, local auth.AuthBudget) auth.AuthBudget {
			return &budget{c: c, name: name, limit: limit, window: window, local: local}
		},
		History: func(ttl time.Duration, local auth.AuthHistory) auth.AuthHistory {
			return &history{c: c, ttl: ttl, local: local}
		},
	}
}

// budget is one AUTH budget shared through Redis. The in-process budget it
// wraps follows every step too, so that it holds this instance's recent
// attempts when Redis goes away and answers alone.
type budget struct {
	c      *Client
	name   string
	limit  int
	window time.Duration
	local  auth.AuthBudget
}

var _ auth.AuthBudget = (*budget)(nil)

func (b *budget) key(k string) string { return b.c.key("auth", b.name, k) }

func (b *budget) run(s *redis.Script, k string) (int64, error) {
	var v int64
	err := b.c.call(func(ctx context.Context) (err error) {
		v, err = s.Run(ctx, b.c.rdb, []string{b.key(k)}, b.limit, b.window.Milliseconds()).Int64()
		return err
	})
	return v, err
}

// Reserve takes one attempt from the shared budget; the stricter of the
// shared and the local answer holds.
func (b *budget) Reserve(k string) auth.Verdict {
	lv := b.local.Reserve(k)
	if lv == auth.Spent {
		return auth.Spent // the failures seen here alone suffice
	}
	v, err := b.run(budgetReserve, k)
	if err != nil {
		return lv
	}
	sv := auth.Verdict(v)
	if sv != auth.Granted && lv == auth.Granted {
		b.local.Refund(k)
	}
	return sv
}

// Refund gives a reserved attempt back.
func (b *budget) Refund(k string) {
	b.local.Refund(k)
	b.run(budgetRefund, k)
}

// Fail counts a failure; over when the shared or the local count reached
// the limit.
func (b *budget) Fail(k string) bool {
	lo := b.local.Fail(k)
	v, err := b.run(budgetFail, k)
	return lo || (err == nil && v == 1)
}

// Blocked reports whether the key's failures reached the limit.
func (b *budget) Blocked(k string) bool {
	if b.local.Blocked(k) {
		return true
	}
	var f int
	err := b.c.call(func(ctx context.Context) (err error) {
		f, err = b.c.rdb.HGet(ctx, b.key(k), "f").Int()
		return err
	})
	return err == nil && f >= b.limit
}

// historyRemember records a login and keeps the 16 most recent addresses
// (the in-process bound), the hash living ttl after the last login.
var historyRemember = redis.NewScript(`
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if redis.call('HLEN', KEYS[1]) > tonumber(ARGV[4]) then
  local all = redis.call('HGETALL', KEYS[1])
  local oldest, at = nil, nil
  for i = 1, #all, 2 do
    local t = tonumber(all[i+1])
    if at == nil or t < at then oldest, at = all[i], t end
  end
  redis.call('HDEL', KEYS[1], oldest)
end
return 0`)

// rememberPerUser matches the in-process history's bound.
const rememberPerUser = 16

// history is the good history shared through Redis: a hash per user of
// address to the time of the last login there.
type history struct {
	c     *Client
	ttl   time.Duration
	local auth.AuthHistory
}

var _ auth.AuthHistory = (*history)(nil)

// Known: a login from addr within ttl at any instance.
func (h *history) Known(user, addr string) bool {
	if h.local.Known(user, addr) {
		return true
	}
	var at int64
	err := h.c.call(func(ctx context.Context) (err error) {
		at, err = h.c.rdb.HGet(ctx, h.c.key("hist", user), addr).Int64()
		return err
	})
	return err == nil && time.Since(time.UnixMilli(at)) <= h.ttl
}

// Remember records a login here and in Redis.
func (h *history) Remember(user, addr string) {
	h.local.Remember(user, addr)
	h.c.call(func(ctx context.Context) error {
		return historyRemember.Run(ctx, h.c.rdb, []string{h.c.key("hist", user)}, addr,
			strconv.FormatInt(time.Now().UnixMilli(), 10), h.ttl.Milliseconds(), rememberPerUser).Err()
	})
}
