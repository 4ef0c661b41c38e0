// Package mailbox puts IMAP (RFC 9051, RFC 3501) and POP3 (RFC 1939) clients
// behind the same guard as SMTP: TLS first (implicit, or STARTTLS/STLS with
// login refused before it), the login checked by tlsguard's credential
// sources through the throttle SMTP AUTH uses, and only then a connection to
// the legacy mailbox server, logged in with the same credentials, after
// which bytes are copied both ways.
//
// Before login the session is parsed strictly with bounded lines and
// literals, and nothing the client sends reaches the backend. Package proxy
// accepts the connections (session caps, PROXY protocol) and hands them over
// through Server.Serve.
package mailbox

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tlsguard/tlsguard/internal/auth"
	"github.com/tlsguard/tlsguard/internal/mailwire"
)

// Protocol is what a mailbox listener speaks.
type Protocol string

// Mailbox protocols.
const (
	IMAP Protocol = "imap"
	POP3 Protocol = "pop3"
)

// Idle limits after login, per protocol. RFC 9051 5.4 (RFC 3501 5.4): an
// inactivity autologout timer must be at least 30 minutes, and IDLE (RFC
// 2177) clients re-issue it every 29 minutes. RFC 1939 3: a POP3 autologout
// timer must be at least 10 minutes.
const (
	imapIdle = 30 * time.Minute
	pop3Idle = 10 * time.Minute
)

// Sizes that bound a session's memory: a command line (and the buffer of
// the client leg's reader, through which bytes are copied after login; the
// backend leg's is internal/mailwire's, as large) and a literal (LOGIN's
// user or password).
const (
	maxLine    = 4096
	maxLiteral = 1024
	// maxBad bounds the unknown or malformed commands before login.
	maxBad = 3
)

// BackendConfig is the legacy mailbox server.
type BackendConfig struct {
	// IMAP and POP3 are host:port of the backend for each protocol; "" for
	// a protocol no listener speaks.
	IMAP, POP3 string
	// TLS is none, starttls or implicit towards the backend.
	TLS string
	// TLSConfig is used when TLS is not none; ServerName must be set.
	TLSConfig *tls.Config
	// Timeout bounds the connection, the greeting and each login command.
	Timeout time.Duration
}

// wire is the leg to addr, for internal/mailwire's logins.
func (b BackendConfig) wire(addr string) mailwire.Config {
	return mailwire.Config{Address: addr, TLS: b.TLS, TLSConfig: b.TLSConfig, Timeout: b.Timeout}
}

// Config is what a Server needs; every duration must be set.
type Config struct {
	Backend BackendConfig
	// TLS is the server side (STARTTLS, STLS and implicit TLS).
	TLS *tls.Config
	// Hostname is named in the greetings.
	Hostname string
	// Auth returns the credential source in force (it may be replaced on
	// reload); nil refuses every login with a temporary failure.
	Auth func() auth.Source
	// Throttle is the one SMTP AUTH uses, so failures count together.
	Throttle *auth.Throttle
	// AuthFailDelay is waited before answering a failed login.
	AuthFailDelay time.Duration
	// CommandTimeout bounds the wait for each command before login.
	CommandTimeout time.Duration
	// HandshakeTimeout bounds a TLS handshake.
	HandshakeTimeout time.Duration
	// WriteTimeout bounds each write to the client.
	WriteTimeout time.Duration
	Logger       *zap.Logger
	Metrics      *Metrics
}

// Server runs mailbox sessions handed over by the listeners.
type Server struct {
	cfg Config
	log *zap.Logger

	mu       sync.Mutex
	sessions map[*session]struct{}
	empty    *sync.Cond
	closing  bool
}

// NewServer builds a Server from cfg.
func NewServer(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, sessions: map[*session]struct{}{}}
	s.empty = sync.NewCond(&s.mu)
	return s
}

// Conn is one admitted client connection.
type Conn struct {
	net.Conn
	// ID is the session id that logs and replies share.
	ID string
	// Listener names the listener.
	Listener string
	Protocol Protocol
	// Implicit: TLS from the first byte; otherwise STARTTLS (or STLS).
	Implicit bool
	// ClientIP is the client's address (from the PROXY header if any).
	ClientIP netip.Addr
	// Done, if set, is called once the session has ended.
	Done func()
}

// Serve runs one session up to login and, after it, starts the copy in
// goroutines of its own and returns; c.Done is called (if set) once the
// session has ended and c is closed.
func (s *Server) Serve(c Conn) {
	ss := newSession(s, c)
	s.mu.Lock()
	s.sessions[ss] = struct{}{}
	closing := s.closing
	s.mu.Unlock()
	if closing {
		ss.srv.cfg.Metrics.open.WithLabelValues(string(c.Protocol)).Inc()
		ss.goodbye()
		ss.finish()
		return
	}
	if !ss.run() {
		ss.finish()
	}
}

// remove forgets an ended session.
func (s *Server) remove(ss *session) {
	s.mu.Lock()
	delete(s.sessions, ss)
	if len(s.sessions) == 0 {
		s.empty.Broadcast()
	}
	s.mu.Unlock()
	if ss.c.Done != nil {
		ss.c.Done()
	}
}

// Shutdown waits for the open sessions to end until ctx is done, then tells
// the remaining clients goodbye (IMAP "* BYE", POP3 "-ERR") and closes
// them. Sessions handed over after it started are greeted with goodbye.
func (s *Server) Shutdown(ctx context.Context) {
	s.mu.Lock()
	s.closing = true
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		s.mu.Lock()
		for len(s.sessions) > 0 {
			s.empty.Wait()
		}
		s.mu.Unlock()
		close(done)
	}()
	select {
	case <-done:
		return
	case <-ctx.Done():
	}
	s.mu.Lock()
	open := make([]*session, 0, len(s.sessions))
	for ss := range s.sessions {
		open = append(open, ss)
	}
	s.mu.Unlock()
	for _, ss := range open {
		ss.goodbye()
	}
	<-done
}

// Metrics are the mailbox sessions' collectors; labels hold only listener
// names, protocols, mechanisms and fixed words.
type Metrics struct {
	sessions *prometheus.CounterVec
	open     *prometheus.GaugeVec
	logins   *prometheus.CounterVec
	bytes    *prometheus.CounterVec
}

// NewMetrics creates the collectors and registers them with reg (nil: a
// private registry).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	const ns = "tlsguard"
	m := &Metrics{
		sessions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "mailbox_sessions_total",
			Help: "Mailbox (IMAP, POP3) sessions ended, by protocol and how they ended."}, []string{"listener", "protocol", "end"}),
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "mailbox_sessions_open",
			Help: "Mailbox sessions open now, by protocol."}, []string{"protocol"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "mailbox_logins_total",
			Help: "Mailbox logins by protocol, mechanism and result (success, failure, throttled, busy, error, backend_error)."}, []string{"listener", "protocol", "mechanism", "result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "mailbox_bytes_total",
			Help: "Bytes copied after login, by protocol and direction (in: from the client)."}, []string{"protocol", "direction"}),
	}
	reg.MustRegister(m.sessions, m.open, m.logins, m.bytes)
	return m
}

// Listen creates a mailbox listener's gauges and byte counters at 0 when it
// opens, so that a dashboard shows the protocol before its first session.
func (m *Metrics) Listen(p Protocol) {
	m.open.WithLabelValues(string(p))
	for _, d := range []string{"in", "out"} {
		m.bytes.WithLabelValues(string(p), d)
	}
}
