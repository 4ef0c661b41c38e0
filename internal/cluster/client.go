// Package cluster is the state a fleet of tlsguard instances shares through
// Redis: the AUTH throttle's budgets and history, the policy's rate limits,
// the ACME storage (account, certificates, keys, locks, challenge tokens)
// and the TLS session ticket keys.
//
// Every Redis call is bounded by one timeout. A call that fails or times
// out puts the instance in degraded mode: it stops asking Redis, each part
// falls back to its in-process state (the local throttle and rate counters,
// the certificates it holds, the ticket keys it last had), the
// tlsguard_cluster_degraded gauge reads 1, and a probe every second brings
// sharing back when Redis answers again. Nothing is ever let through for
// want of an answer. docs/scaling.md describes the keys and the failure
// modes.
package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Options say how to reach Redis.
type Options struct {
	// Address is host:port of a single Redis (or Valkey); empty with
	// Sentinel.
	Address string
	// SentinelMaster and SentinelAddresses find the master through Redis
	// Sentinel, which fails over on its own.
	SentinelMaster    string
	SentinelAddresses []string
	// Username and Password authenticate (Redis 6 ACL); both may be empty.
	Username, Password string
	// TLS, if not nil, encrypts the connection.
	TLS *tls.Config
	// KeyPrefix starts every key, so that one Redis can serve several
	// fleets.
	KeyPrefix string
	// Timeout bounds every call; past it the instance acts alone.
	Timeout time.Duration
	// Logger receives the changes of mode; nil discards.
	Logger *zap.Logger
	// Degraded, if not nil, is set to 1 in degraded mode and 0 otherwise
	// (tlsguard_cluster_degraded).
	Degraded prometheus.Gauge
}

// errAway is returned without asking Redis while the instance is degraded.
var errAway = errors.New("cluster: Redis unreachable, acting alone")

// probeInterval is how often Redis is pinged, to notice it going away
// between calls and coming back.
const probeInterval = time.Second

// Client is the connection to Redis with the degraded-mode state.
type Client struct {
	rdb     redis.UniversalClient
	prefix  string
	timeout time.Duration
	log     *zap.Logger
	gauge   prometheus.Gauge

	mu     sync.Mutex // orders the mode changes and their log lines
	down   atomic.Bool
	reason atomic.Pointer[string]

	stop chan struct{}
	done chan struct{}
}

// New connects to Redis and starts the probe. Redis being away is no error:
// the instance starts degraded and shares once Redis answers.
func New(o Options) (*Client, error) {
	if o.Timeout <= 0 {
		return nil, errors.New("cluster: timeout must be above zero")
	}
	uo := &redis.UniversalOptions{
		Username:     o.Username,
		Password:     o.Password,
		TLSConfig:    o.TLS,
		DialTimeout:  o.Timeout,
		ReadTimeout:  o.Timeout,
		WriteTimeout: o.Timeout,
		PoolTimeout:  o.Timeout,
		// One try: the caller falls back at once rather than wait for
		// retries past its timeout.
		MaxRetries:            -1,
		ContextTimeoutEnabled: true,
		DisableIdentity:       true,
	}
	switch {
	case o.SentinelMaster != "":
		uo.MasterName, uo.Addrs = o.SentinelMaster, o.SentinelAddresses
	case o.Address != "":
		uo.Addrs = []string{o.Address}
	default:
		return nil, errors.New("cluster: no Redis address or sentinel")
	}
	// go-redis logs dial failures on its own; the mode changes below say
	// it once, in the service's log.
	redis.SetLogger(quiet{})
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	c := &Client{
		rdb:     redis.NewUniversalClient(uo),
		prefix:  o.KeyPrefix,
		timeout: o.Timeout,
		log:     log,
		gauge:   o.Degraded,
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
	}
	if c.gauge == nil {
		c.gauge = prometheus.NewGauge(prometheus.GaugeOpts{Name: "cluster_degraded"})
	}
	if err := c.ping(); err != nil {
		c.setDown(err)
	} else {
		c.log.Info("sharing state through Redis", zap.String("redis", c.String()))
	}
	go c.probe()
	return c, nil
}

// String names the Redis in logs.
func (c *Client) String() string {
	if o, ok := c.rdb.(*redis.Client); ok {
		return o.Options().Addr
	}
	return "sentinel"
}

// Close stops the probe and closes the connections.
func (c *Client) Close() error {
	close(c.stop)
	<-c.done
	return c.rdb.Close()
}

// Degraded reports whether the instance acts alone, and why.
func (c *Client) Degraded() (bool, string) {
	if !c.down.Load() {
		return false, ""
	}
	return true, *c.reason.Load()
}

// key is a full Redis key.
func (c *Client) key(parts ...string) string {
	k := c.prefix
	for i, p := range parts {
		if i > 0 {
			k += ":"
		}
		k += p
	}
	return k
}

// call runs f with the call timeout, unless the instance is degraded. An
// error other than "no such key" makes it degraded.
func (c *Client) call(f func(ctx context.Context) error) error {
	if c.down.Load() {
		return errAway
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	err := f(ctx)
	if err != nil && !errors.Is(err, redis.Nil) {
		c.setDown(err)
	}
	return err
}

func (c *Client) ping() error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	return c.rdb.Ping(ctx).Err()
}

// probe pings Redis every second: it notices Redis going away between
// calls, and brings sharing back when Redis answers again.
func (c *Client) probe() {
	defer close(c.done)
	t := time.NewTicker(probeInterval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		if err := c.ping(); err != nil {
			c.setDown(err)
		} else {
			c.setUp()
		}
	}
}

// setDown enters degraded mode, logging once.
func (c *Client) setDown(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.down.Load() {
		return
	}
	why := err.Error()
	c.reason.Store(&why)
	c.down.Store(true)
	c.gauge.Set(1)
	c.log.Warn("Redis unreachable: acting alone (local throttles and rate counters, cached certificates, last ticket keys; no certificate issuance) until it answers again",
		zap.String("redis", c.String()), zap.Error(err))
}

// setUp leaves degraded mode, logging once.
func (c *Client) setUp() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.down.Load() {
		return
	}
	c.down.Store(false)
	c.gauge.Set(0)
	c.log.Info("Redis answers again: sharing state", zap.String("redis", c.String()))
}

// quiet drops go-redis's own log lines.
type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}
