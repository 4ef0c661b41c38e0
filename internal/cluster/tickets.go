package cluster

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
)

// Session ticket keys shared by the fleet: one instance makes a new key
// every rotation period and puts it first, the previous ones stay for
// resumption of the tickets they sealed (RFC 8446 4.6.1 lets a server
// refuse any ticket, so a key that is gone costs a full handshake, nothing
// more). The list is sealed in Redis; every instance reads it on each poll
// and hands it to its TLS config.

const (
	// TicketRotation is how often a new ticket key is made.
	TicketRotation = 12 * time.Hour
	// ticketKeys is how many keys are kept, the newest first: a ticket
	// resumes for up to two rotations after it was issued.
	ticketKeys = 3
	// ticketPoll is how often an instance reads the keys: a key made by
	// another instance is known here this long after at most.
	ticketPoll = 10 * time.Second
)

// Tickets keeps the TLS session ticket keys in step with the fleet.
type Tickets struct {
	c        *Client
	seal     *Sealer
	set      func([][32]byte)
	rotation time.Duration
	log      *zap.Logger

	keys    [][32]byte
	rotated time.Time // when keys[0] was made
}

// Tickets returns the ticket key keeper; set receives each new key list
// (certs.Manager.SetSessionTicketKeys).
func (c *Client) Tickets(seal *Sealer, set func([][32]byte)) *Tickets {
	return &Tickets{c: c, seal: seal, set: set, rotation: TicketRotation, log: c.log.Named("tickets")}
}

// Run syncs the keys now and then every poll until ctx ends.
func (t *Tickets) Run(ctx context.Context) {
	t.Sync()
	tick := time.NewTicker(ticketPoll)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			t.Sync()
		}
	}
}

const ticketName = "tickets"

// Sync reads the fleet's keys, rotates them if they are due (one instance
// does, under a short lock), and installs them. While Redis is away the
// last keys stay, rotated locally when due, so that a long outage does not
// keep one key for ever.
func (t *Tickets) Sync() {
	keys, rotated, err := t.load()
	if err == nil && (len(keys) == 0 || time.Since(rotated) >= t.rotation) {
		keys, rotated, err = t.rotate(keys)
	}
	if err != nil {
		if len(t.keys) == 0 || time.Since(t.rotated) >= t.rotation {
			t.install(rotateKeys(t.keys), time.Now())
		}
		return
	}
	if len(t.keys) == 0 || keys[0] != t.keys[0] || len(keys) != len(t.keys) {
		t.install(keys, rotated)
	}
}

func (t *Tickets) install(keys [][32]byte, rotated time.Time) {
	t.keys, t.rotated = keys, rotated
	t.set(keys)
}

// load reads the sealed list: the time keys[0] was made, then the keys.
func (t *Tickets) load() ([][32]byte, time.Time, error) {
	var sealed []byte
	err := t.c.call(func(ctx context.Context) (err error) {
		sealed, err = t.c.rdb.Get(ctx, t.c.key(ticketName)).Bytes()
		return err
	})
	if errors.Is(err, redis.Nil) {
		return nil, time.Time{}, nil
	}
	if err != nil {
		return nil, time.Time{}, err
	}
	b, err := t.seal.open(ticketName, sealed)
	if err != nil || len(b) < 8 || (len(b)-8)%32 != 0 {
		t.log.Error("ticket keys in Redis do not open: making new ones", zap.Error(err))
		return nil, time.Time{}, nil
	}
	rotated := time.UnixMilli(int64(binary.BigEndian.Uint64(b)))
	var keys [][32]byte
	for b = b[8:]; len(b) > 0; b = b[32:] {
		keys = append(keys, [32]byte(b[:32]))
	}
	return keys, rotated, nil
}

// rotate puts a new key first, if this instance wins the rotation lock;
// otherwise it reads what the winner wrote.
func (t *Tickets) rotate(old [][32]byte) ([][32]byte, time.Time, error) {
	var won bool
	err := t.c.call(func(ctx context.Context) (err error) {
		won, err = t.c.rdb.SetNX(ctx, t.c.key(ticketName, "lock"), 1, 10*time.Second).Result()
		return err
	})
	if err != nil {
		return nil, time.Time{}, err
	}
	if !won {
		time.Sleep(100 * time.Millisecond)
		keys, rotated, err := t.load()
		if err == nil && len(keys) == 0 {
			err = errors.New("cluster: ticket keys being rotated by another instance")
		}
		return keys, rotated, err
	}
	defer t.c.call(func(ctx context.Context) error { return t.c.rdb.Del(ctx, t.c.key(ticketName, "lock")).Err() })
	// Another instance may have rotated since this one looked.
	if cur, at, err := t.load(); err == nil && len(cur) > 0 && time.Since(at) < t.rotation {
		return cur, at, nil
	}
	keys, now := rotateKeys(old), time.Now()
	b := binary.BigEndian.AppendUint64(nil, uint64(now.UnixMilli()))
	for _, k := range keys {
		b = append(b, k[:]...)
	}
	err = t.c.call(func(ctx context.Context) error {
		return t.c.rdb.Set(ctx, t.c.key(ticketName), t.seal.seal(ticketName, b), 0).Err()
	})
	if err != nil {
		return nil, time.Time{}, err
	}
	t.log.Info("session ticket key rotated", zap.Int("keys", len(keys)))
	return keys, now, nil
}

// rotateKeys returns a new random key followed by the newest of old.
func rotateKeys(old [][32]byte) [][32]byte {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		panic(err)
	}
	keys := append([][32]byte{k}, old...)
	if len(keys) > ticketKeys {
		keys = keys[:ticketKeys]
	}
	return keys
}
