package proxy

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"go.uber.org/zap"
)

// listener is the net.Listener go-smtp serves. It admits connections within
// the session limits, wraps them in *conn, and for implicit TLS completes the
// handshake (bounded by HandshakeTimeout) before go-smtp sees the connection,
// so a client that stalls mid-handshake never holds a go-smtp goroutine.
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
		c := l.admit(raw)
		if c == nil {
			continue
		}
		if l.tls == nil {
			if !l.hand(c) {
				return
			}
			continue
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			tc := tls.Server(c, l.tls)
			ctx, cancel := context.WithTimeout(context.Background(), l.srv.limits.HandshakeTimeout)
			err := tc.HandshakeContext(ctx)
			cancel()
			if err != nil {
				l.srv.log.Debug("TLS handshake failed", zap.String("session", c.id), zap.String("listener", l.cfg.Name),
					zap.Stringer("client_ip", c.ip), zap.Error(err))
				c.summary(func(s *sessionSummary) { s.endReason = "tls handshake failed" })
				c.Close()
				return
			}
			l.hand(tc)
		}()
	}
}

// hand passes an accepted connection to go-smtp; false once the listener is closed.
func (l *listener) hand(c net.Conn) bool {
	select {
	case l.out <- c:
		l.srv.track(c)
		return true
	case <-l.done:
		c.Close()
		return false
	}
}

// admit applies the session limits and wraps the connection, or refuses it
// with a 421 (in plaintext listeners) and returns nil.
func (l *listener) admit(raw net.Conn) *conn {
	ip := netip.Addr{}
	if ta, ok := raw.RemoteAddr().(*net.TCPAddr); ok {
		ip = ta.AddrPort().Addr().Unmap()
	}
	if reason := l.srv.sessions.acquire(ip); reason != "" {
		l.srv.log.Warn("connection refused", zap.String("listener", l.cfg.Name), zap.Stringer("client_ip", ip), zap.String("reason", reason))
		if l.cfg.TLS != TLSImplicit {
			raw.SetWriteDeadline(time.Now().Add(time.Second))
			raw.Write([]byte("421 4.7.0 " + reason + ", try again later\r\n"))
		}
		raw.Close()
		return nil
	}
	if tc, ok := raw.(*net.TCPConn); ok {
		tc.SetKeepAlive(true)
	}
	c := &conn{Conn: raw, l: l, id: newSessionID(), ip: ip, start: time.Now(), writeIdle: l.srv.limits.WriteTimeout}
	c.setIdle(l.srv.limits.CommandTimeout)
	return c
}

// release frees the connection's slot and writes the per-session log line.
func (l *listener) release(c *conn) {
	l.srv.sessions.release(c.ip)
	l.srv.untrack(c)
	l.srv.logSession(l.cfg.Name, c)
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

// sessionTable counts open sessions in total and per client IP.
type sessionTable struct {
	mu       sync.Mutex
	total    int
	perIP    map[netip.Addr]int
	maxTotal int
	maxPerIP int
}

// acquire takes a slot for ip or returns why it cannot.
func (t *sessionTable) acquire(ip netip.Addr) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.maxTotal > 0 && t.total >= t.maxTotal {
		return "Too many connections"
	}
	if t.maxPerIP > 0 && t.perIP[ip] >= t.maxPerIP {
		return "Too many connections from your address"
	}
	t.total++
	t.perIP[ip]++
	return ""
}

func (t *sessionTable) release(ip netip.Addr) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.total--
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
