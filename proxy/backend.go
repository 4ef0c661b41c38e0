package proxy

import (
	"context"
	"io"

	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/tlsguard/tlsguard/internal/upstream"
)

// The backend leg lives in internal/upstream; this file is the session's
// view of it: the interfaces a session uses (a fake in the unit tests), the
// configuration handed over, and the metrics it reports into.

// backendLeg is one session's use of the backend (upstream.Leg).
type backendLeg interface {
	Begin(from string, opts *smtp.MailOptions, class upstream.Class) backendTx
	Close()
}

// backendTx is one transaction at the backend (upstream.Tx).
type backendTx interface {
	Rcpt(ctx context.Context, to string, opts *smtp.RcptOptions) error
	Data(ctx context.Context, header string, r io.Reader) (upstream.Result, error)
	Abort()
	Broken() bool
}

// upstreamLeg adapts *upstream.Leg to backendLeg.
type upstreamLeg struct{ *upstream.Leg }

func (l upstreamLeg) Begin(from string, opts *smtp.MailOptions, class upstream.Class) backendTx {
	return l.Leg.Begin(from, opts, class)
}

// errBackendFailed answers any failure of the backend leg that carries no
// reply of the backend's own: the client keeps the message and retries.
var errBackendFailed = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: "Backend unavailable, please try again later"}

// backendReply is the reply for a failure of the backend leg: the
// backend's own refusal verbatim (one line), else 451 4.4.1.
func backendReply(err error) *smtp.SMTPError {
	if ue, ok := err.(*upstream.Error); ok && ue.Reply != nil {
		return ue.Reply
	}
	return errBackendFailed
}

var nopLogger = zap.NewNop()

// newUpstream builds the backend leg of cfg; m nil counts nothing.
func newUpstream(cfg BackendConfig, hostname string, bare BareLineEndings, log *zap.Logger, m *Metrics) *upstream.Client {
	var obs upstream.Observer
	if m != nil {
		obs = backendObserver{m}
	}
	return upstream.New(upstream.Config{
		Address:               cfg.Address,
		Hostname:              hostname,
		TLS:                   upstream.TLSMode(cfg.TLS),
		TLSConfig:             cfg.TLSConfig,
		Timeout:               cfg.Timeout,
		DataDoneTimeout:       cfg.DataDoneTimeout,
		PoolSize:              cfg.PoolSize,
		PoolIdle:              cfg.PoolIdle,
		MaxConnections:        cfg.MaxConnections,
		ReservedAuthenticated: cfg.ReservedAuthenticated,
		SpoolAfter:            cfg.SpoolAfter,
		SpoolDir:              cfg.SpoolDir,
		RejectBareLineEndings: bare == BareReject,
	}, log, obs)
}

// backendObserver counts the backend leg in Metrics.
type backendObserver struct{ m *Metrics }

func (o backendObserver) Dialled()   { o.m.backendOpened.Inc() }
func (o backendObserver) Idle(n int) { o.m.backendIdle.Set(float64(n)) }
func (o backendObserver) InUse(c upstream.Class, n int) {
	o.m.backendActive.WithLabelValues(c.String()).Set(float64(n))
}
func (o backendObserver) SlotWait(c upstream.Class) { o.m.slotWaits.WithLabelValues(c.String()).Inc() }
func (o backendObserver) SlotTimeout(c upstream.Class) {
	o.m.slotTimeouts.WithLabelValues(c.String()).Inc()
}
func (o backendObserver) Reply(st upstream.Stage, code int) {
	o.m.backendReplies.WithLabelValues(string(st), codeLabel(code)).Inc()
}
func (o backendObserver) Failure(st upstream.Stage) {
	o.m.backendErrors.WithLabelValues(string(st)).Inc()
}
