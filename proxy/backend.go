package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"go.uber.org/zap"
)

// backend dials the legacy server and remembers what it offers.
type backend struct {
	cfg      BackendConfig
	hostname string
	log      *zap.Logger
	metrics  *Metrics // nil: not counted (the auth.backend checker)

	mu      sync.Mutex
	caps    capabilities
	pool    []*backendConn // idle connections, oldest first
	reaping bool           // a reap is scheduled
	active  [2]int         // connections in use, by class (slotUnauth, slotAuth)
	waiting int            // sessions waiting for a slot
	freed   chan struct{}  // closed and replaced when a slot frees and someone waits
}

// Slot classes: who holds a backend connection. Unauthenticated sessions may
// hold at most MaxConnections-ReservedAuthenticated; the rest is kept for
// logged-in users, so a flood of anonymous sessions cannot lock them out.
const (
	slotUnauth = 0
	slotAuth   = 1
)

var slotClassNames = [2]string{"unauthenticated", "authenticated"}

// errNoSlot: every backend connection this session's class may use is busy.
var errNoSlot = errors.New("no backend connection free")

// capabilities are the backend EHLO keywords that change what we advertise.
type capabilities struct {
	smtputf8   bool
	dsn        bool
	requiretls bool
	size       int64 // 0: no limit announced
}

func newBackend(cfg BackendConfig, hostname string, log *zap.Logger, m *Metrics) *backend {
	return &backend{cfg: cfg, hostname: hostname, log: log, metrics: m, freed: make(chan struct{})}
}

func (b *backend) capabilities() capabilities {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.caps
}

// learn connects once to read the backend's EHLO.
func (b *backend) learn(ctx context.Context) error {
	c, err := b.dial(ctx)
	if err != nil {
		return err
	}
	c.quit()
	return nil
}

// backendConn is one SMTP connection to the backend.
type backendConn struct {
	c      *smtp.Client
	dl     *deadlineConn // the TCP connection, under TLS if any
	idleAt time.Time     // when it went back to the pool
	reused bool          // taken from the pool (may have gone stale)

	b     *backend // set while it holds a slot; b.mu guards the two below
	held  bool     // counted in b.active[class]
	class int
}

// get returns an idle connection from the pool or dials a new one, within
// the cap on backend connections: when the session's class has no slot
// free, it waits for one until ctx is done (errNoSlot). Idle connections
// count towards the cap too: a connection enters the pool only from use and
// a new one is dialled only when the pool is empty, so in use plus idle
// never exceeds MaxConnections.
func (b *backend) get(ctx context.Context, authenticated bool) (*backendConn, error) {
	class := slotUnauth
	if authenticated {
		class = slotAuth
	}
	waited := false
	for {
		now := time.Now()
		var drop []*backendConn
		b.mu.Lock()
		if !b.admits(class) {
			freed := b.freed
			b.waiting++
			b.mu.Unlock()
			if !waited && b.metrics != nil {
				b.metrics.slotWaits.WithLabelValues(slotClassNames[class]).Inc()
			}
			waited = true
			var done bool
			select {
			case <-freed:
			case <-ctx.Done():
				done = true
			}
			b.mu.Lock()
			b.waiting--
			b.mu.Unlock()
			if !done {
				continue
			}
			if b.metrics != nil {
				b.metrics.slotTimeouts.WithLabelValues(slotClassNames[class]).Inc()
			}
			return nil, fmt.Errorf("backend %s: %w (%d in use)", b.cfg.Address, errNoSlot, b.inUse())
		}
		var bc *backendConn
		for bc == nil && len(b.pool) > 0 {
			bc = b.pool[len(b.pool)-1]
			b.pool = b.pool[:len(b.pool)-1]
			if now.Sub(bc.idleAt) >= b.cfg.PoolIdle {
				drop, bc = append(drop, bc), nil
			}
		}
		b.active[class]++
		b.countConns()
		b.mu.Unlock()
		for _, d := range drop {
			d.quit()
		}
		if bc != nil {
			bc.reused = true
		} else {
			var err error
			if bc, err = b.dial(context.WithoutCancel(ctx)); err != nil {
				b.mu.Lock()
				b.active[class]--
				b.slotFreed()
				b.mu.Unlock()
				return nil, err
			}
		}
		bc.b, bc.held, bc.class = b, true, class
		return bc, nil
	}
}

// admits reports whether class may take one more connection; b.mu is held.
func (b *backend) admits(class int) bool {
	limit := b.cfg.MaxConnections
	if b.active[0]+b.active[1] >= limit {
		return false
	}
	return class == slotAuth || b.active[slotUnauth] < limit-b.cfg.ReservedAuthenticated
}

func (b *backend) inUse() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.active[0] + b.active[1]
}

// slotFreed wakes the sessions waiting for a slot and updates the gauges;
// b.mu is held.
func (b *backend) slotFreed() {
	if b.waiting > 0 {
		close(b.freed)
		b.freed = make(chan struct{})
	}
	b.countConns()
}

// release gives a connection's slot back (it is being closed).
func (bc *backendConn) release() {
	b := bc.b
	if b == nil {
		return
	}
	b.mu.Lock()
	if bc.held {
		bc.held = false
		b.active[bc.class]--
		b.slotFreed()
	}
	b.mu.Unlock()
}

// put returns a connection in a clean state (no transaction open) for reuse,
// or closes it when the pool is full.
func (b *backend) put(bc *backendConn) {
	bc.idleAt = time.Now()
	bc.reused = false
	b.mu.Lock()
	if bc.held {
		bc.held = false
		b.active[bc.class]--
		b.slotFreed()
	}
	if len(b.pool) < b.cfg.PoolSize {
		b.pool = append(b.pool, bc)
		b.countIdle()
		bc = nil
		if !b.reaping { // the pool was empty: bc is the oldest
			b.reaping = true
			time.AfterFunc(b.cfg.PoolIdle, b.reap)
		}
	}
	b.mu.Unlock()
	if bc != nil {
		bc.quit()
	}
}

// reap closes the pooled connections idle for PoolIdle or longer, and is
// scheduled again for when the oldest one left will be: without it, idle
// connections would hold the backend's connection slots until it timed them
// out.
func (b *backend) reap() {
	now := time.Now()
	b.mu.Lock()
	n := 0
	for n < len(b.pool) && now.Sub(b.pool[n].idleAt) >= b.cfg.PoolIdle {
		n++
	}
	stale := slices.Clone(b.pool[:n])
	b.pool = slices.Delete(b.pool, 0, n)
	b.countIdle()
	b.reaping = len(b.pool) > 0
	if b.reaping {
		time.AfterFunc(b.pool[0].idleAt.Add(b.cfg.PoolIdle).Sub(now), b.reap)
	}
	b.mu.Unlock()
	for _, bc := range stale {
		bc.quit()
	}
}

// countIdle updates the idle-connections gauge; b.mu is held.
func (b *backend) countIdle() {
	if b.metrics != nil {
		b.metrics.backendIdle.Set(float64(len(b.pool)))
	}
}

// countConns updates the idle and in-use gauges; b.mu is held.
func (b *backend) countConns() {
	b.countIdle()
	if b.metrics != nil {
		for class, n := range b.active {
			b.metrics.backendActive.WithLabelValues(slotClassNames[class]).Set(float64(n))
		}
	}
}

// drain closes every pooled connection.
func (b *backend) drain() {
	b.mu.Lock()
	pool := b.pool
	b.pool = nil
	b.countIdle()
	b.mu.Unlock()
	for _, bc := range pool {
		bc.quit()
	}
}

// dial connects, greets, does STARTTLS if configured and says EHLO. Errors
// name the backend.
func (b *backend) dial(ctx context.Context) (*backendConn, error) {
	d := net.Dialer{Timeout: b.cfg.Timeout}
	raw, err := d.DialContext(ctx, "tcp", b.cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", b.cfg.Address, err)
	}
	// Every write to the backend is bounded too (DATA streams through here).
	dl := &deadlineConn{Conn: raw, timeout: b.cfg.Timeout}
	raw = dl
	var c *smtp.Client
	switch b.cfg.TLS {
	case TLSImplicit:
		tc := tls.Client(raw, b.cfg.TLSConfig)
		hctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
		err = tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			raw.Close()
			return nil, fmt.Errorf("backend %s: TLS handshake: %w", b.cfg.Address, err)
		}
		c = smtp.NewClient(tc)
	case TLSStartTLS:
		// Done here rather than by go-smtp's NewClientStartTLS, which says
		// EHLO localhost before STARTTLS and silently drops plaintext sent
		// behind the 220 instead of refusing the backend.
		tc, greeting, err := b.startTLS(ctx, raw)
		if err != nil {
			raw.Close()
			return nil, fmt.Errorf("backend %s: STARTTLS: %w", b.cfg.Address, err)
		}
		c = smtp.NewClient(&greetedConn{Conn: tc, greeting: greeting})
	default:
		c = smtp.NewClient(raw)
	}
	c.CommandTimeout = b.cfg.Timeout
	c.SubmissionTimeout = b.cfg.Timeout
	if err := c.Hello(b.hostname); err != nil {
		c.Close()
		// A refusal at the greeting or EHLO is about the backend host, not
		// the message (a sending MTA skips such a host and retries, RFC 5321
		// 3.1): not wrapped, so backendReply answers 451 4.4.1 instead of
		// passing a 5xx that would bounce the message to MAIL or RCPT.
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return nil, fmt.Errorf("backend %s: refused at greeting or EHLO: %v", b.cfg.Address, err)
		}
		return nil, fmt.Errorf("backend %s: EHLO: %w", b.cfg.Address, err)
	}
	b.record(c)
	if b.metrics != nil {
		b.metrics.backendOpened.Inc()
	}
	return &backendConn{c: c, dl: dl}, nil
}

// startTLS reads the greeting, says EHLO, checks that STARTTLS is offered,
// sends it and does the handshake (RFC 3207). It returns the TLS connection
// and the greeting line for go-smtp's client, which expects one first.
func (b *backend) startTLS(ctx context.Context, raw net.Conn) (*tls.Conn, []byte, error) {
	tp := textproto.NewConn(raw)
	_, greeting, err := tp.ReadResponse(220)
	if err != nil {
		return nil, nil, fmt.Errorf("greeting: %w", err)
	}
	if err := tp.PrintfLine("EHLO %s", b.hostname); err != nil {
		return nil, nil, err
	}
	_, ehlo, err := tp.ReadResponse(250)
	if err != nil {
		return nil, nil, fmt.Errorf("EHLO: %w", err)
	}
	offered := false
	for _, l := range strings.Split(ehlo, "\n")[1:] {
		offered = offered || strings.EqualFold(strings.TrimSpace(l), "STARTTLS")
	}
	if !offered {
		return nil, nil, errors.New("not offered")
	}
	if err := tp.PrintfLine("STARTTLS"); err != nil {
		return nil, nil, err
	}
	if _, _, err := tp.ReadResponse(220); err != nil {
		return nil, nil, err
	}
	if tp.R.Buffered() > 0 {
		// Plaintext sent after the 220 would be read as if it came
		// through TLS (STARTTLS command injection, CVE-2011-0411).
		return nil, nil, errors.New("plaintext after the 220 reply")
	}
	tc := tls.Client(raw, b.cfg.TLSConfig)
	hctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return nil, nil, fmt.Errorf("TLS handshake: %w", err)
	}
	first, _, _ := strings.Cut(greeting, "\n")
	return tc, []byte("220 " + first + "\r\n"), nil
}

// greetedConn replays the backend's greeting, read before STARTTLS, to
// go-smtp's client, which reads a greeting before anything else.
type greetedConn struct {
	net.Conn
	greeting []byte
}

func (g *greetedConn) Read(p []byte) (int, error) {
	if len(g.greeting) > 0 {
		n := copy(p, g.greeting)
		g.greeting = g.greeting[n:]
		return n, nil
	}
	return g.Conn.Read(p)
}

// record notes the backend's extensions, and says when they changed: the
// advertised set is fixed per listener at start, so a backend that lost an
// extension is handled per transaction (the client gets the backend's refusal).
func (b *backend) record(c *smtp.Client) {
	var caps capabilities
	caps.smtputf8, _ = c.Extension("SMTPUTF8")
	caps.dsn, _ = c.Extension("DSN")
	caps.requiretls, _ = c.Extension("REQUIRETLS")
	if ok, v := c.Extension("SIZE"); ok {
		caps.size, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	}
	b.mu.Lock()
	old := b.caps
	b.caps = caps
	b.mu.Unlock()
	if old != caps {
		b.log.Info("backend extensions", zap.Bool("smtputf8", caps.smtputf8), zap.Bool("dsn", caps.dsn),
			zap.Bool("requiretls", caps.requiretls), zap.Int64("size", caps.size))
	}
}

// quit ends the session politely but never waits longer than the timeouts.
func (bc *backendConn) quit() {
	bc.c.Quit()
	bc.c.Close()
	bc.release()
}

// abort drops the connection without QUIT: an unfinished DATA is discarded by
// the backend because it never sees the final dot.
func (bc *backendConn) abort() {
	bc.c.Close()
	bc.release()
}

// deadlineConn gives every read and write its own deadline.
type deadlineConn struct {
	net.Conn
	timeout     time.Duration
	readTimeout atomic.Int64 // nanoseconds; 0: timeout
}

func (d *deadlineConn) Read(b []byte) (int, error) {
	t := d.timeout
	if rt := time.Duration(d.readTimeout.Load()); rt > 0 {
		t = rt
	}
	d.Conn.SetReadDeadline(time.Now().Add(t))
	return d.Conn.Read(b)
}

// awaitFinal makes the reads that follow wait up to d for each piece of the
// reply (the final dot's), and returns the function that restores Timeout.
func (bc *backendConn) awaitFinal(d time.Duration) (restore func()) {
	bc.dl.readTimeout.Store(int64(d))
	return func() { bc.dl.readTimeout.Store(0) }
}

func (d *deadlineConn) Write(b []byte) (int, error) {
	d.Conn.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.Conn.Write(b)
}

// SetDeadline is what go-smtp's client calls around each command; keep our
// per-operation deadlines instead of its "no deadline" reset.
func (d *deadlineConn) SetDeadline(t time.Time) error { return nil }

// backendReply turns what the backend said into a reply for the client: its
// own *smtp.SMTPError, flattened to one line, passes through verbatim;
// anything else (network, timeout) means the backend failed: 451 4.4.1.
func backendReply(err error) *smtp.SMTPError {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		out := *se
		if out.EnhancedCode == smtp.EnhancedCodeNotSet {
			// go-smtp misparses enhanced codes of multi-line replies whose
			// code is only on a later line: recover it, last line first.
			lines := strings.Split(out.Message, "\n")
			for i := len(lines) - 1; i >= 0; i-- {
				if ec, rest, ok := splitEnhanced(lines[i]); ok {
					out.EnhancedCode = ec
					lines[i] = rest
					out.Message = strings.Join(lines, "\n")
					break
				}
			}
		}
		out.Message = flatten(out.Message)
		if out.Code < 400 || out.Code > 599 {
			// A reply code that makes no sense here (e.g. a 2xx where an
			// error was expected): treat as a failure of the backend.
			return errBackendFailed
		}
		return &out
	}
	return errBackendFailed
}

var nopLogger = zap.NewNop()

var errBackendFailed = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: "Backend unavailable, please try again later"}

// flatten joins a multi-line reply into one line, dropping repeated
// enhanced codes.
func flatten(msg string) string {
	if !strings.Contains(msg, "\n") {
		return msg
	}
	lines := strings.Split(msg, "\n")
	for i, l := range lines {
		if _, rest, ok := splitEnhanced(l); ok && i > 0 {
			lines[i] = rest
		}
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, " ")
}

// splitEnhanced splits "5.1.1 text" into its code and text.
func splitEnhanced(s string) (smtp.EnhancedCode, string, bool) {
	code, rest, _ := strings.Cut(s, " ")
	parts := strings.Split(code, ".")
	if len(parts) != 3 {
		return smtp.EnhancedCode{}, s, false
	}
	var ec smtp.EnhancedCode
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 {
			return smtp.EnhancedCode{}, s, false
		}
		ec[i] = n
	}
	if ec[0] != 2 && ec[0] != 4 && ec[0] != 5 {
		return smtp.EnhancedCode{}, s, false
	}
	return ec, rest, true
}
