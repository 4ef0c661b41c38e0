package upstream

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// errNoSlot: every backend connection this class may use is busy.
var errNoSlot = errors.New("no backend connection free")

// get returns an idle connection from the pool or dials a new one, within
// the cap on backend connections: when the class has no slot free, it waits
// for one until ctx is done (errNoSlot). Idle connections count towards the
// cap too: a connection enters the pool only from use and a new one is
// dialled only when the pool is empty, so in use plus idle never exceeds
// MaxConnections.
func (c *Client) get(ctx context.Context, class Class) (*conn, error) {
	waited := false
	for {
		now := time.Now()
		var drop []*conn
		c.mu.Lock()
		if !c.admits(class) {
			freed := c.freed
			c.waiting++
			c.mu.Unlock()
			if !waited {
				c.obs.SlotWait(class)
			}
			waited = true
			var done bool
			select {
			case <-freed:
			case <-ctx.Done():
				done = true
			}
			c.mu.Lock()
			c.waiting--
			c.mu.Unlock()
			if !done {
				continue
			}
			c.obs.SlotTimeout(class)
			return nil, fmt.Errorf("backend %s: %w (%d in use)", c.cfg.Address, errNoSlot, c.inUse())
		}
		var bc *conn
		for bc == nil && len(c.pool) > 0 {
			bc = c.pool[len(c.pool)-1]
			c.pool = c.pool[:len(c.pool)-1]
			if now.Sub(bc.idleAt) >= c.cfg.PoolIdle {
				drop, bc = append(drop, bc), nil
			}
		}
		c.active[class]++
		c.countConns()
		c.mu.Unlock()
		for _, d := range drop {
			d.quit()
		}
		if bc != nil {
			bc.reused = true
		} else {
			var err error
			if bc, err = c.dial(context.WithoutCancel(ctx)); err != nil {
				c.mu.Lock()
				c.active[class]--
				c.slotFreed()
				c.mu.Unlock()
				return nil, err
			}
		}
		bc.owner, bc.held, bc.class = c, true, class
		return bc, nil
	}
}

// admits reports whether class may take one more connection; c.mu is held.
func (c *Client) admits(class Class) bool {
	limit := c.cfg.MaxConnections
	if c.active[0]+c.active[1] >= limit {
		return false
	}
	return class == Authenticated || c.active[Unauthenticated] < limit-c.cfg.ReservedAuthenticated
}

func (c *Client) inUse() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.active[0] + c.active[1]
}

// slotFreed wakes the transactions waiting for a slot and updates the
// gauges; c.mu is held.
func (c *Client) slotFreed() {
	if c.waiting > 0 {
		close(c.freed)
		c.freed = make(chan struct{})
	}
	c.countConns()
}

// release gives a connection's slot back (it is being closed).
func (bc *conn) release() {
	c := bc.owner
	if c == nil {
		return
	}
	c.mu.Lock()
	if bc.held {
		bc.held = false
		c.active[bc.class]--
		c.slotFreed()
	}
	c.mu.Unlock()
}

// put returns a connection in a clean state (no transaction open) for
// reuse, or closes it when the pool is full.
func (c *Client) put(bc *conn) {
	bc.idleAt = time.Now()
	bc.reused = false
	c.mu.Lock()
	if bc.held {
		bc.held = false
		c.active[bc.class]--
		c.slotFreed()
	}
	if len(c.pool) < c.cfg.PoolSize {
		c.pool = append(c.pool, bc)
		c.obs.Idle(len(c.pool))
		bc = nil
		if !c.reaping { // the pool was empty: bc is the oldest
			c.reaping = true
			time.AfterFunc(c.cfg.PoolIdle, c.reap)
		}
	}
	c.mu.Unlock()
	if bc != nil {
		bc.quit()
	}
}

// reap closes the pooled connections idle for PoolIdle or longer, and is
// scheduled again for when the oldest one left will be: without it, idle
// connections would hold the backend's connection slots until it timed them
// out.
func (c *Client) reap() {
	now := time.Now()
	c.mu.Lock()
	n := 0
	for n < len(c.pool) && now.Sub(c.pool[n].idleAt) >= c.cfg.PoolIdle {
		n++
	}
	stale := slices.Clone(c.pool[:n])
	c.pool = slices.Delete(c.pool, 0, n)
	c.obs.Idle(len(c.pool))
	c.reaping = len(c.pool) > 0
	if c.reaping {
		time.AfterFunc(c.pool[0].idleAt.Add(c.cfg.PoolIdle).Sub(now), c.reap)
	}
	c.mu.Unlock()
	for _, bc := range stale {
		bc.quit()
	}
}

// countConns updates the idle and in-use gauges; c.mu is held.
func (c *Client) countConns() {
	c.obs.Idle(len(c.pool))
	for class, n := range c.active {
		c.obs.InUse(Class(class), n)
	}
}

// Drain closes every pooled connection (at shutdown).
func (c *Client) Drain() {
	c.mu.Lock()
	pool := c.pool
	c.pool = nil
	c.obs.Idle(0)
	c.mu.Unlock()
	for _, bc := range pool {
		bc.quit()
	}
}
