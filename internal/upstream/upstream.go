// Package upstream is the backend leg of tlsguard: the SMTP client side that
// delivers what a session accepted to the legacy server. It owns the
// connection pool, the cap on connections (with a share reserved for
// logged-in sessions), dialling, TLS (implicit or STARTTLS), what the
// backend's EHLO offers, the wire form of a message (line endings,
// dot-stuffing) and the spooling of slow messages. It judges nothing: the
// session decides what to deliver and maps what comes back to replies.
//
// It imports nothing of the proxy; what it counts goes to an Observer.
package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"
)

// TLSMode says how the backend leg uses TLS.
type TLSMode string

// TLS modes of the backend leg.
const (
	TLSNone     TLSMode = "none"     // plaintext
	TLSStartTLS TLSMode = "starttls" // plaintext greeting, then STARTTLS (RFC 3207)
	TLSImplicit TLSMode = "implicit" // TLS from the first byte
)

// Config describes the backend. Every duration and the cap must be set: the
// defaults are the configuration's, not this package's.
type Config struct {
	// Address is host:port of the backend.
	Address string
	// Hostname is what tlsguard says in EHLO.
	Hostname string
	// TLS is how to talk to the backend; TLSConfig is used unless TLSNone.
	TLS       TLSMode
	TLSConfig *tls.Config
	// Timeout bounds the connection and each command; DATA is bounded by
	// Timeout per write and per reply, except the reply to the final dot.
	Timeout time.Duration
	// DataDoneTimeout bounds the wait for the reply to the final dot (RFC
	// 5321 4.5.3.2.6: a server may scan or queue the message meanwhile).
	DataDoneTimeout time.Duration
	// PoolSize bounds the idle connections kept for reuse; 0: none kept
	// (a Leg still keeps its own between transactions).
	PoolSize int
	// PoolIdle is how long an idle connection is kept.
	PoolIdle time.Duration
	// MaxConnections caps the connections open at once, idle ones included.
	MaxConnections int
	// ReservedAuthenticated is the part of MaxConnections only
	// Authenticated transactions may use.
	ReservedAuthenticated int
	// SpoolAfter is how long a transaction may hold a connection while
	// the client pauses or sends its message; then the connection is
	// given up and the transaction replayed once the client goes on.
	SpoolAfter time.Duration
	// SpoolDir holds spool files ("": os.TempDir()).
	SpoolDir string
	// RejectBareLineEndings fails a message with a bare CR or LF
	// (ErrBareLineEnding) instead of turning it into CRLF.
	RejectBareLineEndings bool
}

// Class is who holds a backend connection: Unauthenticated transactions may
// hold at most MaxConnections-ReservedAuthenticated, so a flood of
// anonymous sessions cannot lock logged-in users out.
type Class int

// Classes of transactions.
const (
	Unauthenticated Class = 0
	Authenticated   Class = 1
)

var classNames = [2]string{"unauthenticated", "authenticated"}

func (c Class) String() string { return classNames[c] }

// Stage is the step of a transaction at which the backend leg failed.
type Stage string

// Stages.
const (
	StageConnect Stage = "connect" // no connection (dial, TLS, greeting, EHLO, no slot free)
	StageMail    Stage = "mail"
	StageRcpt    Stage = "rcpt"
	StageData    Stage = "data"
	// StageReplay: a transaction whose connection was given up while the
	// client paused could not be opened again. The client was already told
	// 250 for its recipients, so such an error never carries a Reply.
	StageReplay Stage = "replay"
)

// Error is a failure of the backend leg. Reply is the backend's own refusal
// (4xx or 5xx), flattened to one line but otherwise verbatim; nil when the
// backend gave none the client could be shown (network, timeout, a reply
// code that makes no sense there, or a replay).
type Error struct {
	Stage Stage
	Reply *smtp.SMTPError
	Err   error
}

func (e *Error) Error() string {
	return fmt.Sprintf("backend %s: %v", e.Stage, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether trying again later may succeed: any failure
// without a reply, and any 4xx reply.
func (e *Error) Temporary() bool { return e.Reply == nil || e.Reply.Code < 500 }

// ErrBroken: the transaction failed earlier and nothing more can succeed.
var ErrBroken = errors.New("backend transaction broken")

// errAborted: Abort cut the transaction short.
var errAborted = errors.New("transaction aborted")

// Observer counts what the backend leg does. Labels it is given are
// bounded: stages, classes and reply codes.
type Observer interface {
	Dialled()                    // a connection opened: greeted, EHLO said
	Idle(n int)                  // idle connections in the pool now
	InUse(class Class, n int)    // connections held by class now
	SlotWait(class Class)        // a transaction waits for a free slot
	SlotTimeout(class Class)     // ...and gave up after Timeout
	Reply(stage Stage, code int) // the backend replied at stage
	Failure(stage Stage)         // the backend failed at stage without a reply
}

type nopObserver struct{}

func (nopObserver) Dialled()          {}
func (nopObserver) Idle(int)          {}
func (nopObserver) InUse(Class, int)  {}
func (nopObserver) SlotWait(Class)    {}
func (nopObserver) SlotTimeout(Class) {}
func (nopObserver) Reply(Stage, int)  {}
func (nopObserver) Failure(Stage)     {}

// Capabilities are the backend's EHLO keywords that change what tlsguard
// advertises to its own clients.
type Capabilities struct {
	SMTPUTF8   bool
	DSN        bool
	RequireTLS bool
	Size       int64 // 0: no limit announced
}

// Client is the backend leg of one configuration: shared by every session.
type Client struct {
	cfg Config
	log *zap.Logger
	obs Observer

	mu      sync.Mutex
	caps    Capabilities
	pool    []*conn       // idle connections, oldest first
	reaping bool          // a reap is scheduled
	active  [2]int        // connections in use, by class
	waiting int           // transactions waiting for a slot
	freed   chan struct{} // closed and replaced when a slot frees and someone waits
}

// New builds a Client; nothing is dialled until it is used. obs may be nil.
func New(cfg Config, log *zap.Logger, obs Observer) *Client {
	if log == nil {
		log = zap.NewNop()
	}
	if obs == nil {
		obs = nopObserver{}
	}
	return &Client{cfg: cfg, log: log, obs: obs, freed: make(chan struct{})}
}

// Capabilities returns what the backend offered at its last EHLO.
func (c *Client) Capabilities() Capabilities {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.caps
}

// Learn connects once to read the backend's EHLO.
func (c *Client) Learn(ctx context.Context) error {
	bc, err := c.dial(ctx)
	if err != nil {
		return err
	}
	bc.quit()
	return nil
}

// Authenticate checks credentials by AUTH PLAIN on a connection of its own
// (outside the pool and the cap): nil for 235, else the backend's refusal
// as go-smtp gives it (an *smtp.SMTPError) or why it could not be asked.
func (c *Client) Authenticate(ctx context.Context, user, password string) error {
	bc, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer bc.quit()
	if ok, _ := bc.c.Extension("AUTH"); !ok {
		return errors.New("backend " + c.cfg.Address + ": does not offer AUTH")
	}
	return bc.c.Auth(sasl.NewPlainClient("", user, password))
}
