package proxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
	"go.uber.org/zap"

	"github.com/tlsguard/tlsguard/internal/mailbox"
)

// listener is the net.Listener go-smtp serves. The accept loop only takes a
// slot of the listener's own limit and of the total; a goroutine per connection then reads a
// PROXY header (where configured), applies the per-IP limit to the real
// client address and, for implicit TLS, completes the handshake, each step
// bounded by a timeout. So go-smtp only ever sees admitted connections, and a
// client that stalls early never holds the accept loop or a go-smtp session.
type listener struct {
	raw  net.Listener
	srv  *Server
	cfg  ListenerConfig
	tls  *tls.Config // nil unless implicit TLS
	out  chan net.Conn
	done chan struct{}
	once sync.Once
	wg   sync.WaitGroup
}

func newListener(srv *Server, raw net.Listener, cfg ListenerConfig, tlsConfig *tls.Config) *listener {
	l := &listener{raw: raw, srv: srv, cfg: cfg, out: make(chan net.Conn), done: make(chan struct{})}
	if cfg.TLS == TLSImplicit {
		l.tls = tlsConfig
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *listener) acceptLoop() {
	defer l.wg.Done()
	var delay time.Duration
	for {
		raw, err := l.raw.Accept()
		if err != nil {
			select {
			case <-l.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Resource exhaustion (EMFILE) and the like: back off.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.srv.log.Warn("accept failed", zap.String("listener", l.cfg.Name), zap.Error(err), zap.Duration("retry_in", delay))
			time.Sleep(delay)
			continue
		}
		delay = 0
		if reason := l.srv.sessions.acquire(l.cfg.Name, l.cfg.MaxSessions); reason != "" {
			l.refuse(raw, addrOf(raw.RemoteAddr()), reason, "Too many connections")
			continue
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.prepare(raw)
		}()
	}
}

// prepare reads a PROXY header (if this listener takes them), applies the
// per-IP limit, does the implicit TLS handshake, and hands the connection to
// go-smtp.
func (l *listener) prepare(raw net.Conn) {
	var under net.Conn = raw
	if pp := l.cfg.ProxyProtocol; pp != nil && pp.trusts(addrOf(raw.RemoteAddr())) {
		// A trusted load balancer must send the header. Anyone else is a
		// direct client and is not made to wait for one (SMTP servers speak
		// first); a header it sends anyway is caught as a non-SMTP first
		// line (firstLine.Read) and the connection closed.
		pc := proxyproto.NewConn(raw, proxyproto.WithPolicy(proxyproto.REQUIRE), proxyproto.SetReadHeaderTimeout(pp.HeaderTimeout))
		if _, err := pc.Read(nil); err != nil {
			l.srv.sessions.releaseSlot(l.cfg.Name)
			l.srv.metrics.refused.WithLabelValues(l.cfg.Name, "proxy_header").Inc()
			l.srv.log.Warn("PROXY header refused", zap.String("listener", l.cfg.Name), zap.Stringer("peer", addrOf(raw.RemoteAddr())), zap.Error(err))
			raw.Close()
			return
		}
		under = pc
	}
	ip := addrOf(under.RemoteAddr())
	if !l.srv.sessions.acquireIP(ip) {
		l.srv.sessions.releaseSlot(l.cfg.Name)
		l.refuse(raw, ip, "limit_per_ip", "Too many connections from your address")
		return
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		tc.SetKeepAlive(true)
	}
	if l.cfg.Protocol.mailbox() {
		l.serveMailbox(under, ip)
		return
	}
	c := &conn{Conn: under, writeIdle: l.srv.limits.WriteTimeout}
	rec := &sessionRecord{l: l, c: c, id: newSessionID(), ip: ip, start: time.Now()}
	c.end = rec
	c.setIdle(l.srv.limits.CommandTimeout)
	c.startCommand() // the wait for the first command; c is not shared yet
	l.srv.metrics.sessionsOpen.WithLabelValues(l.cfg.Name).Inc()
	l.srv.metrics.sessionsTotal.WithLabelValues(l.cfg.Name).Inc()
	if l.tls == nil {
		if d := l.cfg.GreetingDelay; d > 0 && talksEarly(under, d) {
			l.srv.metrics.refused.WithLabelValues(l.cfg.Name, "early_talker").Inc()
			rec.summary(func(s *sessionSummary) { s.endReason = "data before greeting" })
			io.WriteString(c, "554 5.5.1 Protocol error: data sent before the greeting\r\n")
			c.Close()
			return
		}
		l.hand(&firstLine{Conn: c, rec: rec}, rec)
		return
	}
	tc := tls.Server(c, l.tls)
	ctx, cancel := context.WithTimeout(context.Background(), l.srv.limits.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		l.srv.metrics.handshakes.WithLabelValues(l.cfg.Name, "implicit", "", "failed").Inc()
		l.srv.log.Debug("TLS handshake failed", zap.String("session", rec.id), zap.String("listener", l.cfg.Name),
			zap.Stringer("client_ip", rec.ip), zap.Error(err))
		rec.summary(func(s *sessionSummary) { s.endReason = "tls handshake failed" })
		c.Close()
		return
	}
	l.srv.metrics.handshakes.WithLabelValues(l.cfg.Name, "implicit", tlsVersionWord(tc.ConnectionState().Version), "ok").Inc()
	l.hand(tc, rec)
}

// firstLine checks the first bytes a plaintext client sends: a browser or
// proxy tricked into talking to a mail port (cross-protocol attacks), or a
// PROXY header from a peer that is not a trusted load balancer, is hung up
// on, as Postfix does for GET/POST. It sits above the conn, so the check
// sees what go-smtp would read; STARTTLS wraps it.
type firstLine struct {
	net.Conn // the *conn
	rec      *sessionRecord
	checked  bool // go-smtp reads from one goroutine at a time
}

func (f *firstLine) Read(b []byte) (int, error) {
	n, err := f.Conn.Read(b)
	if n > 0 && !f.checked {
		f.checked = true
		if notSMTP(b[:n]) {
			f.rec.summary(func(s *sessionSummary) { s.endReason = "non-SMTP client" })
			f.Conn.Close()
			return 0, net.ErrClosed
		}
	}
	return n, err
}

var notSMTPPrefixes = [][]byte{[]byte("GET "), []byte("POST "), []byte("HEAD "), []byte("PUT "),
	[]byte("CONNECT "), []byte("OPTIONS "), []byte("DELETE "), []byte("PATCH "),
	[]byte("PROXY "), []byte("\r\n\r\n\x00\r\nQUIT\n")} // PROXY protocol v1, v2

// notSMTP reports whether b starts like an HTTP request line or a PROXY
// protocol header.
func notSMTP(b []byte) bool {
	for _, m := range notSMTPPrefixes {
		if bytes.HasPrefix(b, m) {
			return true
		}
	}
	return false
}

// serveMailbox hands an admitted IMAP or POP3 connection to package
// mailbox, which does its TLS (implicit or STARTTLS) and protocol; the
// session's slots are given back when it ends (after login it runs in
// goroutines of its own).
func (l *listener) serveMailbox(c net.Conn, ip netip.Addr) {
	l.srv.metrics.sessionsOpen.WithLabelValues(l.cfg.Name).Inc()
	l.srv.metrics.sessionsTotal.WithLabelValues(l.cfg.Name).Inc()
	l.wg.Add(1)
	l.srv.mailbox.Serve(mailbox.Conn{Conn: c, ID: newSessionID(), Listener: l.cfg.Name, Protocol: mailbox.Protocol(l.cfg.Protocol),
		Implicit: l.cfg.TLS == TLSImplicit, ClientIP: ip, Done: func() {
			l.srv.sessions.release(l.cfg.Name, ip)
			l.srv.metrics.sessionsOpen.WithLabelValues(l.cfg.Name).Dec()
			l.wg.Done()
		}})
}

// talksEarly waits up to d for the client to send anything before it was
// greeted. Any byte (or a hang-up) means it did not wait for the greeting.
func talksEarly(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	var b [1]byte
	n, err := c.Read(b[:])
	c.SetReadDeadline(time.Time{})
	if n > 0 {
		return true
	}
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// refuse turns a connection away, with a 421 on plaintext listeners.
func (l *listener) refuse(raw net.Conn, ip netip.Addr, reason, text string) {
	l.srv.metrics.refused.WithLabelValues(l.cfg.Name, reason).Inc()
	l.srv.log.Warn("connection refused", zap.String("listener", l.cfg.Name), zap.Stringer("client_ip", ip), zap.String("reason", reason))
	if l.cfg.TLS != TLSImplicit {
		msg := "421 4.7.0 " + text + ", try again later\r\n"
		switch l.cfg.Protocol {
		case ProtocolIMAP:
			msg = "* BYE [UNAVAILABLE] " + text + ", try again later\r\n"
		case ProtocolPOP3:
			msg = "-ERR [SYS/TEMP] " + text + ", try again later\r\n"
		}
		raw.SetWriteDeadline(time.Now().Add(time.Second))
		raw.Write([]byte(msg))
	}
	raw.Close()
}

// hand passes an accepted connection to go-smtp; false once the listener
// is closed. The record is findable (Server.record) before go-smtp can
// start a session on c.
func (l *listener) hand(c net.Conn, rec *sessionRecord) bool {
	l.srv.track(c, rec)
	select {
	case l.out <- c:
		l.srv.served(rec, c)
		return true
	case <-l.done:
		c.Close()
		return false
	}
}

// release frees the connection's slots: total, listener and client address.
func (l *listener) release(r *sessionRecord) {
	l.srv.sessions.release(l.cfg.Name, r.ip)
	l.srv.metrics.sessionsOpen.WithLabelValues(l.cfg.Name).Dec()
}

// closed forgets a closed connection and writes the per-session log line.
func (l *listener) closed(r *sessionRecord) {
	l.srv.untrack(r)
	l.srv.logSession(l.cfg.Name, r)
}

// Accept returns the next admitted connection (already through the TLS
// handshake on implicit TLS listeners).
func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.out:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting; connections already handed to go-smtp are not touched.
func (l *listener) Close() error {
	var err error
	l.once.Do(func() {
		close(l.done)
		err = l.raw.Close()
	})
	return err
}

func (l *listener) Addr() net.Addr { return l.raw.Addr() }

func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// ProxyProtocol lets a listener take HAProxy's PROXY protocol (v1 and v2)
// from trusted load balancers, so limits, policy and logs see the real client.
type ProxyProtocol struct {
	// Trusted are the addresses allowed (and required) to send the header.
	Trusted []netip.Prefix
	// HeaderTimeout bounds the wait for the header.
	HeaderTimeout time.Duration
}

func (p *ProxyProtocol) trusts(ip netip.Addr) bool {
	for _, n := range p.Trusted {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

// sessionTable counts open sessions in total, per listener and per client
// IP. Listener counts are kept by name, so a listener replaced on reload
// counts the sessions its predecessor still serves.
type sessionTable struct {
	mu          sync.Mutex
	total       int
	perListener map[string]int
	perIP       map[netip.Addr]int
	maxTotal    int
	maxPerIP    int
}

// acquire takes one of the total slots and one of the listener's (max: its
// own cap, 0 for none beyond the total); it returns the refusal reason, or
// "" when admitted. It also bounds the goroutines that wait for a PROXY
// header or a handshake.
func (t *sessionTable) acquire(listener string, max int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if max > 0 && t.perListener[listener] >= max {
		return "limit_listener"
	}
	if t.maxTotal > 0 && t.total >= t.maxTotal {
		return "limit_total"
	}
	t.total++
	t.perListener[listener]++
	return ""
}

// releaseSlot gives back what acquire took.
func (t *sessionTable) releaseSlot(listener string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.releaseSlotLocked(listener)
}

func (t *sessionTable) releaseSlotLocked(listener string) {
	t.total--
	if t.perListener[listener] <= 1 {
		delete(t.perListener, listener)
	} else {
		t.perListener[listener]--
	}
}

// acquireIP takes one of ip's slots.
func (t *sessionTable) acquireIP(ip netip.Addr) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.maxPerIP > 0 && t.perIP[ip] >= t.maxPerIP {
		return false
	}
	t.perIP[ip]++
	return true
}

// release gives back all of a session's slots.
func (t *sessionTable) release(listener string, ip netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.releaseSlotLocked(listener)
	if t.perIP[ip] <= 1 {
		delete(t.perIP, ip)
	} else {
		t.perIP[ip]--
	}
}

func (t *sessionTable) open() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.total
}

// newSessionID returns a short random id that logs and client replies share.
func newSessionID() string {
	var b [6]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
