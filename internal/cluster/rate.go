package cluster

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tlsguard/tlsguard/policy"
)

// rateTake is GCRA (the generic cell rate algorithm, as redis_rate and
// Redis's own CL.THROTTLE use) over every limit of one MAIL or RCPT, on
// Redis's clock: a key holds the theoretical arrival time (TAT) in
// milliseconds; one more is allowed while TAT + interval - window <= now,
// with interval = window / limit, so a burst of up to limit passes and then
// one per interval. All limits are checked before any is counted, as the
// in-process counters do, and the keys expire once idle for their window.
// It returns {0, 0}, or {i, ms}: limit i (1-based) is reached, room in ms.
var rateTake = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tats = {}
for i, key in ipairs(KEYS) do
  local limit, window = tonumber(ARGV[2*i-1]), tonumber(ARGV[2*i])
  local interval = window / limit
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local allowed_at = tat + interval - window
  if allowed_at > now then return {i, math.ceil(allowed_at - now)} end
  tats[i] = tat + interval
end
for i, key in ipairs(KEYS) do
  redis.call('SET', key, string.format('%.3f', tats[i]), 'PX', math.ceil(tats[i] - now) + 1)
end
return {0, 0}`)

// RateStore is the policy's rate limits on Redis.
func (c *Client) RateStore() policy.RateStore { return rateStore{c} }

type rateStore struct{ c *Client }

// Take checks and counts every limit in one round trip.
func (r rateStore) Take(checks []policy.RateCheck) (int, time.Duration, error) {
	keys := make([]string, len(checks))
	args := make([]any, 0, 2*len(checks))
	for i, ch := range checks {
		keys[i] = r.c.key("rate", ch.Kind, ch.Limit, ch.Who)
		args = append(args, strconv.Itoa(ch.Max), strconv.FormatInt(ch.Window.Milliseconds(), 10))
	}
	var res []int64
	err := r.c.call(func(ctx context.Context) (err error) {
		res, err = rateTake.Run(ctx, r.c.rdb, keys, args...).Int64Slice()
		return err
	})
	if err != nil {
		return 0, 0, err
	}
	if len(res) != 2 || res[0] == 0 {
		return -1, 0, nil
	}
	return int(res[0]) - 1, time.Duration(res[1]) * time.Millisecond, nil
}
