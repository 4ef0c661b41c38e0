package auth

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// DovecotConfig is Dovecot's auth service, as Postfix uses it with
// smtpd_sasl_type = dovecot.
type DovecotConfig struct {
	// Network and Address: "unix" and a socket path, or "tcp" and host:port.
	Network, Address string
	// Service is the service name Dovecot's passdb sees (default "smtp").
	Service string
	// Timeout bounds each call (default 5s).
	Timeout time.Duration
	// PoolSize bounds the connections kept open (default 4).
	PoolSize int
}

// Dovecot checks passwords with Dovecot's authentication protocol (a line
// protocol: VERSION and CPID from the client, the server's handshake up to
// DONE, then AUTH requests answered OK, CONT or FAIL). Dovecot does not
// tell an unknown user from a wrong password, so its FAIL is a wrong
// password: put Dovecot after sources that can tell.
type Dovecot struct {
	cfg    DovecotConfig
	slots  chan struct{}
	idle   chan *dovecotConn
	ids    atomic.Uint64
	closed atomic.Bool
}

var _ Source = (*Dovecot)(nil)

// NewDovecot returns the source; it connects on first use.
func NewDovecot(cfg DovecotConfig) *Dovecot {
	if cfg.Service == "" {
		cfg.Service = "smtp"
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.PoolSize <= 0 {
		cfg.PoolSize = 4
	}
	return &Dovecot{cfg: cfg, slots: make(chan struct{}, cfg.PoolSize), idle: make(chan *dovecotConn, cfg.PoolSize)}
}

type dovecotConn struct {
	c net.Conn
	r *bufio.Reader
}

// Authenticate implements Source.
func (d *Dovecot) Authenticate(ctx context.Context, user, password string) (Identity, error) {
	if password == "" || strings.ContainsAny(user, "\x00\t\n") {
		return Identity{}, ErrBadPassword
	}
	ctx, cancel := context.WithTimeout(ctx, d.cfg.Timeout)
	defer cancel()
	select {
	case d.slots <- struct{}{}:
	case <-ctx.Done():
		return Identity{}, fmt.Errorf("dovecot %s: no free connection: %w", d.cfg.Address, ctx.Err())
	}
	defer func() { <-d.slots }()
	for attempt := 0; ; attempt++ {
		c, reused, err := d.get(ctx)
		if err != nil {
			return Identity{}, fmt.Errorf("dovecot %s: %w", d.cfg.Address, err)
		}
		ok, err := d.auth(ctx, c, user, password)
		if err == nil || errors.Is(err, ErrBadPassword) {
			d.put(c)
			if ok {
				return Identity{User: user}, nil
			}
			return Identity{}, err
		}
		c.c.Close()
		// An idle connection Dovecot closed meanwhile is retried once.
		if !reused || attempt > 0 || ctx.Err() != nil {
			return Identity{}, fmt.Errorf("dovecot %s: %w", d.cfg.Address, err)
		}
	}
}

// auth sends one AUTH PLAIN request with the response inline and reads its
// answer. "secured": the client's connection to tlsguard is TLS (AUTH is
// offered only after TLS); "no-penalty": tlsguard throttles itself, and
// Dovecot would otherwise slow every user down behind tlsguard's one
// address.
func (d *Dovecot) auth(ctx context.Context, c *dovecotConn, user, password string) (bool, error) {
	dl, _ := ctx.Deadline()
	c.c.SetDeadline(dl)
	id := strconv.FormatUint(d.ids.Add(1), 10)
	resp := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + password))
	if _, err := fmt.Fprintf(c.c, "AUTH\t%s\tPLAIN\tservice=%s\tsecured\tno-penalty\tresp=%s\n", id, d.cfg.Service, resp); err != nil {
		return false, err
	}
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return false, err
		}
		f := strings.Split(strings.TrimSuffix(line, "\n"), "\t")
		if len(f) < 2 || f[1] != id {
			continue // a reply to an abandoned request
		}
		switch f[0] {
		case "OK":
			return true, nil
		case "FAIL":
			for _, p := range f[2:] {
				if p == "temp" {
					return false, errors.New("temporary failure")
				}
			}
			return false, ErrBadPassword
		default: // CONT: PLAIN needs no second step
			return false, fmt.Errorf("unexpected %q", f[0])
		}
	}
}

func (d *Dovecot) get(ctx context.Context) (*dovecotConn, bool, error) {
	select {
	case c := <-d.idle:
		return c, true, nil
	default:
	}
	var dl net.Dialer
	nc, err := dl.DialContext(ctx, d.cfg.Network, d.cfg.Address)
	if err != nil {
		return nil, false, err
	}
	dead, _ := ctx.Deadline()
	nc.SetDeadline(dead)
	c := &dovecotConn{c: nc, r: bufio.NewReader(nc)}
	if _, err := fmt.Fprintf(nc, "VERSION\t1\t2\nCPID\t%d\n", os.Getpid()); err != nil {
		nc.Close()
		return nil, false, err
	}
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			nc.Close()
			return nil, false, fmt.Errorf("handshake: %w", err)
		}
		if strings.HasPrefix(line, "VERSION\t") && !strings.HasPrefix(line, "VERSION\t1\t") {
			nc.Close()
			return nil, false, fmt.Errorf("unsupported protocol %q", strings.TrimSpace(line))
		}
		if line == "DONE\n" {
			return c, false, nil
		}
	}
}

// Close closes the idle connections, and those in use as they come back.
func (d *Dovecot) Close() {
	d.closed.Store(true)
	for {
		select {
		case c := <-d.idle:
			c.c.Close()
		default:
			return
		}
	}
}

func (d *Dovecot) put(c *dovecotConn) {
	if d.closed.Load() {
		c.c.Close()
		return
	}
	select {
	case d.idle <- c:
	default:
		c.c.Close()
	}
}
