// Package proxy is tlsguard's SMTP front end: listeners (implicit TLS,
// STARTTLS, plaintext), go-smtp sessions with safe AUTH, relay decisions from
// package policy, and streaming of accepted messages to the legacy backend.
//
// A message is acknowledged to the client only after the backend accepted
// it: the proxy never queues.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/tlsguard/tlsguard/internal/auth"
	"github.com/tlsguard/tlsguard/internal/mailbox"
	"github.com/tlsguard/tlsguard/internal/upstream"
	"github.com/tlsguard/tlsguard/policy"
)

// TLSMode says how a listener or the backend leg uses TLS.
type TLSMode string

// TLS modes.
const (
	TLSNone     TLSMode = "none"     // plaintext only
	TLSStartTLS TLSMode = "starttls" // plaintext greeting, upgrade with STARTTLS
	TLSImplicit TLSMode = "implicit" // TLS from the first byte
)

// Protocol is what a listener speaks.
type Protocol string

// Listener protocols.
const (
	ProtocolSMTP Protocol = "smtp"
	ProtocolIMAP Protocol = "imap"
	ProtocolPOP3 Protocol = "pop3"
)

// mailbox reports whether p is served by package mailbox.
func (p Protocol) mailbox() bool { return p == ProtocolIMAP || p == ProtocolPOP3 }

// ListenerConfig describes one listening socket.
type ListenerConfig struct {
	// Name identifies the listener in logs and policy rules.
	Name string
	// Address is host:port to listen on.
	Address string
	// TLS is implicit, starttls or none.
	TLS TLSMode
	// Protocol is smtp ("" too), imap or pop3; imap and pop3 sessions are
	// served by package mailbox (TLS must be implicit or starttls).
	Protocol Protocol
	// RequireTLS refuses MAIL before STARTTLS with 530 5.7.0.
	RequireTLS bool
	// Auth offers AUTH (after TLS only). False never offers it (an MX port).
	Auth bool
	// ProxyProtocol, when set, takes PROXY protocol headers from trusted
	// load balancers.
	ProxyProtocol *ProxyProtocol
	// GreetingDelay holds the greeting back this long; a client that talks
	// before it is disconnected (spambots do; real MTAs wait, RFC 5321
	// 3.1). Zero: greet at once. For MX ports (postscreen uses 6 s).
	GreetingDelay time.Duration
	// MaxSessions bounds this listener's open sessions inside
	// Limits.MaxSessions, so that a flood on one listener (an MX port is
	// open to anyone) cannot take the sessions another one needs; beyond
	// it a client gets 421 4.7.0. Zero: only Limits.MaxSessions bounds it.
	// Caps that add up to at most Limits.MaxSessions guarantee each
	// listener its own.
	MaxSessions int
}

// BackendConfig describes the legacy server that receives accepted mail.
type BackendConfig struct {
	// Address is host:port of the backend.
	Address string
	// TLS is how to talk to the backend: none, starttls or implicit.
	TLS TLSMode
	// TLSConfig is used when TLS is not none; ServerName must be set.
	TLSConfig *tls.Config
	// Timeout bounds the connection and each command; DATA is bounded by
	// Timeout per write and per reply, except the reply to the final dot.
	Timeout time.Duration
	// DataDoneTimeout bounds the wait for the reply to the end-of-data dot.
	// A backend may scan or queue the
	// message meanwhile: giving up sooner answers 451 for a message the
	// backend then stores, and the client's retry stores it twice.
	DataDoneTimeout time.Duration
	// PoolSize bounds the idle connections kept for reuse by later
	// sessions; 0: no reuse (a new connection, greeting and EHLO for every
	// session that sends mail; a session still keeps its own connection
	// from one transaction to the next). The pool never holds more
	// connections than were in use at once within the last PoolIdle (a
	// connection enters it only after use, and a new one is dialled only
	// when it is empty).
	PoolSize int
	// PoolIdle is how long an idle connection is kept before it is closed
	// with QUIT.
	PoolIdle time.Duration
	// MaxConnections caps the connections open to the backend at once,
	// idle ones included.
	MaxConnections int
	// ReservedAuthenticated is the part of MaxConnections that only
	// authenticated sessions may use (0: none), so anonymous sessions
	// never take the last ones.
	ReservedAuthenticated int
	// SpoolAfter is how long a message may take to arrive while it holds a
	// backend connection; a slower one is spooled (memory, then a file in
	// SpoolDir), the connection freed, and the message sent once complete.
	SpoolAfter time.Duration
	// SpoolDir holds spool files ("": os.TempDir()); each is unlinked as
	// soon as it is created.
	SpoolDir string
}

// check refuses a backend leg left unset: zero timeouts would fail every
// message, a zero cap would refuse them all.
func (b BackendConfig) check() error {
	switch {
	case b.Timeout <= 0:
		return errors.New("proxy: Backend.Timeout must be above zero")
	case b.DataDoneTimeout <= 0:
		return errors.New("proxy: Backend.DataDoneTimeout must be above zero")
	case b.SpoolAfter <= 0:
		return errors.New("proxy: Backend.SpoolAfter must be above zero")
	case b.MaxConnections <= 0:
		return errors.New("proxy: Backend.MaxConnections must be above zero")
	case b.ReservedAuthenticated < 0 || b.ReservedAuthenticated >= b.MaxConnections:
		return errors.New("proxy: Backend.ReservedAuthenticated must be from 0 to MaxConnections-1")
	}
	return nil
}

// Limits bound what one client may use. Every field must be set: their
// defaults are the config's (internal/config), not this package's.
type Limits struct {
	MaxMessageBytes  int64         // SIZE advertised; larger messages get 552 5.3.4
	MaxRecipients    int           // per message; more get 452 4.5.3
	MaxLineLength    int           // command and DATA line length
	MaxSessions      int           // open sessions in total
	MaxSessionsPerIP int           // open sessions per client IP
	CommandTimeout   time.Duration // idle time allowed between reads outside DATA
	DataTimeout      time.Duration // idle time allowed between reads inside DATA
	WriteTimeout     time.Duration // time allowed for one write to the client
	HandshakeTimeout time.Duration // TLS handshake (and the EHLO after STARTTLS)
	AuthFailDelay    time.Duration // delay before answering a failed AUTH
	AuthMaxFailures  int           // failures per address, and per user at an address, in AuthFailWindow before 421
	AuthFailWindow   time.Duration // how long a failure is remembered
	// AuthUserMaxFailures bounds the failures against one user from all
	// addresses without good history for that user, in AuthFailWindow;
	// past it those addresses get 454 and no check.
	AuthUserMaxFailures int
	// AuthRemember is how long an address a user logged in from stays
	// exempt from AuthUserMaxFailures.
	AuthRemember time.Duration
	// AuthMaxConcurrent bounds the password checks running at once.
	AuthMaxConcurrent int
}

// check refuses limits left unset, which would refuse every client or time
// out at once; only the delay before answering a failed AUTH may be zero.
func (l Limits) check() error {
	for _, f := range []struct {
		name string
		zero bool
	}{
		{"MaxMessageBytes", l.MaxMessageBytes <= 0}, {"MaxRecipients", l.MaxRecipients <= 0},
		{"MaxLineLength", l.MaxLineLength <= 0}, {"MaxSessions", l.MaxSessions <= 0},
		{"MaxSessionsPerIP", l.MaxSessionsPerIP <= 0}, {"CommandTimeout", l.CommandTimeout <= 0},
		{"DataTimeout", l.DataTimeout <= 0}, {"WriteTimeout", l.WriteTimeout <= 0},
		{"HandshakeTimeout", l.HandshakeTimeout <= 0}, {"AuthMaxFailures", l.AuthMaxFailures <= 0},
		{"AuthFailWindow", l.AuthFailWindow <= 0}, {"AuthUserMaxFailures", l.AuthUserMaxFailures <= 0},
		{"AuthRemember", l.AuthRemember <= 0}, {"AuthMaxConcurrent", l.AuthMaxConcurrent <= 0},
	} {
		if f.zero {
			return fmt.Errorf("proxy: Limits.%s must be above zero", f.name)
		}
	}
	return nil
}

// BareLineEndings says what happens to a bare CR or LF in a message.
type BareLineEndings string

// Bare line ending handling.
const (
	BareNormalize BareLineEndings = "normalize" // turn into CRLF (as Postfix 3.9 "normalize")
	BareReject    BareLineEndings = "reject"    // refuse the message with 550 5.5.2
)

// Config is everything a Server needs.
type Config struct {
	// Hostname is used in the greeting, the Received header and EHLO to the backend.
	Hostname string
	// Listeners to open.
	Listeners []ListenerConfig
	// TLS is the server TLS configuration for implicit TLS and STARTTLS.
	TLS *tls.Config
	// Backend receives accepted mail.
	Backend BackendConfig
	// Mailbox is the legacy IMAP/POP3 server behind imap and pop3
	// listeners.
	Mailbox mailbox.BackendConfig
	// Limits bound what one client may use; every field must be set.
	Limits Limits
	// BareLineEndings: normalize or reject.
	BareLineEndings BareLineEndings
	// DSN says whose DSN requests reach the backend: DSNAuthenticated
	// (default), DSNAll or DSNNone.
	DSN DSNMode
	// Policy decides relaying. Replace it at run time with SetPolicy.
	Policy *policy.Policy
	// Auth checks credentials (usually an auth.Chain); nil offers no AUTH
	// anywhere.
	Auth auth.Source
	// Logger receives session and transaction lines; nil discards.
	Logger *zap.Logger
	// Metrics counts what happens; nil counts into a private registry.
	Metrics *Metrics
}

// Server runs the listeners of one configuration.
type Server struct {
	cfg      Config
	limits   Limits
	log      *zap.Logger
	policy   atomic.Pointer[policy.Policy]
	auth     atomic.Pointer[authHolder]
	backend  *upstream.Client
	mailbox  *mailbox.Server
	sessions sessionTable
	throttle *auth.Throttle
	metrics  *Metrics
	counters *policy.Counters // rate limits; outlive policy reloads

	serving   atomic.Bool
	mu        sync.Mutex
	open      map[net.Conn]*sessionRecord // by the conn handed to go-smtp
	servers   []*smtp.Server
	listeners []*listener
	retired   []*listener // closed by UpdateListeners; waited for at Shutdown
	wg        sync.WaitGroup
}

type authHolder struct{ a auth.Source }

// New checks cfg and builds a Server; nothing listens until Start.
func New(cfg Config) (*Server, error) {
	if cfg.Hostname == "" {
		return nil, errors.New("proxy: hostname is empty")
	}
	if cfg.Policy == nil {
		return nil, errors.New("proxy: no policy")
	}
	for _, l := range cfg.Listeners {
		if l.TLS != TLSNone && cfg.TLS == nil {
			return nil, fmt.Errorf("proxy: listener %s: TLS %s needs a TLS configuration", l.Name, l.TLS)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	if err := cfg.Limits.check(); err != nil {
		return nil, err
	}
	if err := cfg.Backend.check(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, limits: cfg.Limits, log: log, open: map[net.Conn]*sessionRecord{}}
	s.sessions = sessionTable{perListener: map[string]int{}, perIP: map[netip.Addr]int{}, maxTotal: s.limits.MaxSessions, maxPerIP: s.limits.MaxSessionsPerIP}
	s.metrics = cfg.Metrics
	if s.metrics == nil {
		s.metrics = NewMetrics(nil)
	}
	s.counters = policy.NewCounters(0)
	s.throttle = auth.NewThrottle(auth.ThrottleLimits{MaxFailures: s.limits.AuthMaxFailures, UserMaxFailures: s.limits.AuthUserMaxFailures,
		FailWindow: s.limits.AuthFailWindow, Remember: s.limits.AuthRemember, MaxConcurrent: s.limits.AuthMaxConcurrent})
	s.policy.Store(cfg.Policy)
	s.auth.Store(&authHolder{cfg.Auth})
	s.backend = newUpstream(cfg.Backend, cfg.Hostname, cfg.BareLineEndings, log.Named("backend"), s.metrics)
	s.mailbox = mailbox.NewServer(mailbox.Config{Backend: cfg.Mailbox, TLS: cfg.TLS, Hostname: cfg.Hostname,
		Auth: func() auth.Source { return s.auth.Load().a }, Throttle: s.throttle, AuthFailDelay: s.limits.AuthFailDelay,
		CommandTimeout: s.limits.CommandTimeout, HandshakeTimeout: s.limits.HandshakeTimeout, WriteTimeout: s.limits.WriteTimeout,
		Logger: log, Metrics: s.metrics.mailbox})
	return s, nil
}

// SetPolicy replaces the policy for transactions that start from now on.
func (s *Server) SetPolicy(p *policy.Policy) { s.policy.Store(p) }

// SetAuthenticator replaces the credential check for AUTH from now on and
// returns the one it replaced, for the caller to close.
func (s *Server) SetAuthenticator(a auth.Source) auth.Source {
	return s.auth.Swap(&authHolder{a}).a
}

// Start learns the backend's extensions, binds every listener (all or none)
// and serves them in the background.
func (s *Server) Start(ctx context.Context) error {
	if err := s.backend.Learn(ctx); err != nil {
		// Not fatal: the backend may come up later. Advertise only what every
		// backend can take and say so.
		s.log.Warn("backend not reachable at start; advertising the minimal extension set", zap.String("backend", s.cfg.Backend.Address), zap.Error(err))
	}
	var raws []net.Listener
	for _, lc := range s.cfg.Listeners {
		raw, err := net.Listen("tcp", lc.Address)
		if err != nil {
			for _, r := range raws {
				r.Close()
			}
			return fmt.Errorf("listener %s: %w", lc.Name, err)
		}
		raws = append(raws, raw)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for i, lc := range s.cfg.Listeners {
		s.listeners = append(s.listeners, s.serve(lc, raws[i]))
	}
	s.serving.Store(true)
	s.warnSharedSessions(s.cfg.Listeners)
	return nil
}

// warnSharedSessions warns when the listeners' session caps add up to more
// than Limits.MaxSessions (a listener without a cap counts as the total):
// a flood on one listener can then take the sessions another one needs.
func (s *Server) warnSharedSessions(ls []ListenerConfig) {
	total := s.limits.MaxSessions
	sum := 0
	var uncapped []string
	for _, l := range ls {
		if l.MaxSessions > 0 && l.MaxSessions < total {
			sum += l.MaxSessions
			continue
		}
		sum += total
		uncapped = append(uncapped, l.Name)
	}
	if len(ls) > 1 && sum > total {
		s.log.Warn("listener session caps (listeners[].max_sessions) add up to more than limits.max_sessions: a flood on one listener can take the sessions another needs",
			zap.Int("max_sessions", total), zap.Int("caps_sum", sum), zap.Strings("uncapped", uncapped))
	}
}

// serve starts go-smtp on a bound listener. s.mu is held.
func (s *Server) serve(lc ListenerConfig, raw net.Listener) *listener {
	l := newListener(s, raw, lc, s.cfg.TLS)
	if lc.Protocol.mailbox() {
		s.log.Info("listening", zap.String("listener", lc.Name), zap.Stringer("address", raw.Addr()), zap.String("protocol", string(lc.Protocol)),
			zap.Bool("proxy_protocol", lc.ProxyProtocol != nil), zap.String("tls", string(lc.TLS)), zap.Int("max_sessions", lc.MaxSessions))
		s.metrics.mailbox.Listen(mailbox.Protocol(lc.Protocol))
		return l
	}
	s.metrics.listen(lc, lc.Auth && s.cfg.Auth != nil)
	srv := s.smtpServer(lc)
	s.servers = append(s.servers, srv)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := srv.Serve(l); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, smtp.ErrServerClosed) {
			s.log.Error("listener stopped", zap.String("listener", lc.Name), zap.Error(err))
		}
	}()
	s.log.Info("listening", zap.String("listener", lc.Name), zap.Stringer("address", raw.Addr()), zap.Bool("proxy_protocol", lc.ProxyProtocol != nil),
		zap.String("tls", string(lc.TLS)), zap.Bool("require_tls", lc.RequireTLS), zap.Bool("auth", lc.Auth && s.cfg.Auth != nil), zap.Int("max_sessions", lc.MaxSessions))
	return l
}

// UpdateListeners makes the open listeners match want: new ones are opened,
// ones no longer wanted stop accepting (their open sessions finish), and one
// whose settings changed is replaced. Addresses not in use are bound before
// anything is closed, so a bind failure there changes nothing.
func (s *Server) UpdateListeners(want []ListenerConfig) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.serving.Load() {
		return errors.New("proxy: not serving")
	}
	current := map[string]*listener{}
	for _, l := range s.listeners {
		current[l.cfg.Name] = l
	}
	var open []ListenerConfig
	keep := map[string]*listener{}
	for _, w := range want {
		if l := current[w.Name]; l != nil && reflect.DeepEqual(l.cfg, w) {
			keep[w.Name] = l
			delete(current, w.Name)
			continue
		}
		open = append(open, w)
	}
	freed := map[string]bool{} // addresses that closing listeners give up
	for _, l := range current {
		freed[l.cfg.Address] = true
	}
	raws := map[string]net.Listener{}
	for _, w := range open {
		if freed[w.Address] {
			continue
		}
		raw, err := net.Listen("tcp", w.Address)
		if err != nil {
			for _, r := range raws {
				r.Close()
			}
			return fmt.Errorf("listener %s: %w", w.Name, err)
		}
		raws[w.Name] = raw
	}
	for _, l := range current {
		l.Close()
		s.retired = append(s.retired, l)
		s.log.Info("listener closed; its open sessions finish", zap.String("listener", l.cfg.Name), zap.String("address", l.cfg.Address))
	}
	var errs []error
	s.listeners = s.listeners[:0]
	for _, w := range want {
		if l := keep[w.Name]; l != nil {
			s.listeners = append(s.listeners, l)
			continue
		}
		raw := raws[w.Name]
		if raw == nil {
			var err error
			if raw, err = net.Listen("tcp", w.Address); err != nil {
				errs = append(errs, fmt.Errorf("listener %s: %w", w.Name, err))
				continue
			}
		}
		s.listeners = append(s.listeners, s.serve(w, raw))
	}
	s.cfg.Listeners = want
	s.warnSharedSessions(want)
	return errors.Join(errs...)
}

// Serving reports whether the listeners are up (between Start and Shutdown).
func (s *Server) Serving() bool { return s.serving.Load() }

// Addrs returns the bound address of each listener, in config order.
func (s *Server) Addrs() []net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]net.Addr, len(s.listeners))
	for i, l := range s.listeners {
		out[i] = l.Addr()
	}
	return out
}

// smtpServer configures go-smtp for one listener.
func (s *Server) smtpServer(lc ListenerConfig) *smtp.Server {
	srv := smtp.NewServer(&smtpBackend{srv: s, lc: lc})
	srv.Domain = s.cfg.Hostname
	srv.ErrorLog = zapErrorLog{s.log.Named("smtp")}
	// SIZE advertises the limit; go-smtp refuses a message of exactly
	// MaxMessageBytes, so the limit is exclusive (documented).
	srv.MaxMessageBytes = s.advertisedSize()
	srv.MaxRecipients = s.limits.MaxRecipients
	srv.MaxLineLength = s.limits.MaxLineLength
	// Timeouts are enforced by conn: go-smtp's ReadTimeout would cut off a
	// slow but moving DATA. It is set only so that go-smtp calls
	// SetReadDeadline as it starts each line, which conn takes as the start
	// of that command's time (conn.SetReadDeadline).
	srv.ReadTimeout = s.limits.CommandTimeout
	srv.WriteTimeout = 0
	srv.AllowInsecureAuth = false // AUTH only after TLS: never change this
	if lc.TLS == TLSStartTLS {
		srv.TLSConfig = s.cfg.TLS
		srv.OnStartTLS = func(c *smtp.Conn) {
			if r := s.record(c.Conn()); r != nil {
				r.startingTLS()
			}
		}
	}
	caps := s.backend.Capabilities()
	srv.EnableSMTPUTF8 = caps.SMTPUTF8
	// dsn: none does not advertise DSN, so go-smtp refuses its parameters
	// (a client sends them only to a server that offers DSN) instead of
	// accepting requests that would then be dropped.
	srv.EnableDSN = caps.DSN && s.cfg.DSN != DSNNone
	// REQUIRETLS promises TLS on the next hop: only with a TLS backend leg
	// that itself offers it.
	srv.EnableREQUIRETLS = s.cfg.Backend.TLS != TLSNone && caps.RequireTLS
	return srv
}

// advertisedSize is our limit, or the backend's if that is smaller.
func (s *Server) advertisedSize() int64 {
	if b := s.backend.Capabilities().Size; b > 0 && b < s.limits.MaxMessageBytes {
		return b
	}
	return s.limits.MaxMessageBytes
}

// Shutdown stops accepting, waits for open sessions until ctx is done, then
// tells the remaining clients 421 4.3.2 and closes them.
func (s *Server) Shutdown(ctx context.Context) error {
	s.serving.Store(false)
	s.mu.Lock()
	servers := s.servers
	for _, l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() {
		var wg sync.WaitGroup
		for _, srv := range servers {
			wg.Add(1)
			go func() { defer wg.Done(); srv.Shutdown(context.Background()) }()
		}
		wg.Add(1)
		go func() { defer wg.Done(); s.mailbox.Shutdown(ctx) }()
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		s.log.Warn("grace period over; closing open sessions", zap.Int("open", s.sessions.open()))
		s.sayGoodbye()
		for _, srv := range servers {
			srv.Close()
		}
		<-done
	}
	s.wg.Wait()
	for _, l := range append(s.listeners, s.retired...) {
		l.wg.Wait()
	}
	s.backend.Drain()
	return nil
}

// track makes r findable by the conn handed to go-smtp (record).
func (s *Server) track(handed net.Conn, r *sessionRecord) {
	s.mu.Lock()
	r.handed = handed
	s.open[handed] = r
	s.mu.Unlock()
}

// served marks r as served by go-smtp through outer: shutdown says goodbye
// on it. After STARTTLS outer is the TLS conn, so the 421 goes inside TLS;
// the conn handed over never replaces the TLS conn above it.
func (s *Server) served(r *sessionRecord, outer net.Conn) {
	s.mu.Lock()
	if r.outer == nil || outer != r.handed {
		r.outer = outer
	}
	s.mu.Unlock()
}

func (s *Server) untrack(r *sessionRecord) {
	s.mu.Lock()
	if r.handed != nil {
		delete(s.open, r.handed)
	}
	s.mu.Unlock()
}

// record finds the record of a connection go-smtp serves: the conn handed
// to it, or after STARTTLS the TLS conn over that one.
func (s *Server) record(nc net.Conn) *sessionRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.open[nc]
	if tc, ok := nc.(*tls.Conn); r == nil && ok {
		r = s.open[tc.NetConn()]
	}
	return r
}

// sayGoodbye tells every open session 421 4.3.2 and closes it. A session in
// the middle of DATA loses that message on our side only: the backend never
// saw the final dot, and the client keeps its copy and retries.
func (s *Server) sayGoodbye() {
	s.mu.Lock()
	outers := make([]net.Conn, 0, len(s.open))
	for _, r := range s.open {
		if r.outer != nil {
			outers = append(outers, r.outer)
		}
	}
	s.mu.Unlock()
	for _, o := range outers {
		o.SetWriteDeadline(time.Now().Add(time.Second))
		// tls.Conn serialises writes, so this cannot interleave with a reply
		// inside a TLS record; a plaintext reply is one small write.
		io.WriteString(o, "421 4.3.2 Service shutting down, please try again later\r\n")
		o.Close()
	}
}

// zapErrorLog routes go-smtp's internal log lines to zap. They never carry
// credentials (Server.Debug, which would, stays off).
type zapErrorLog struct{ l *zap.Logger }

func (z zapErrorLog) Printf(format string, v ...any) { z.l.Debug(fmt.Sprintf(format, v...)) }
func (z zapErrorLog) Println(v ...any)               { z.l.Debug(fmt.Sprintln(v...)) }

// ShareAuth replaces the AUTH throttle's state by a fleet's shared one
// (before Start): see auth.Throttle.Share.
func (s *Server) ShareAuth(sh auth.AuthShare) { s.throttle.Share(sh) }
