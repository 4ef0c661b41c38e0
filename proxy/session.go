package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/tlsguard/tlsguard/internal/auth"
	"github.com/tlsguard/tlsguard/internal/upstream"
	"github.com/tlsguard/tlsguard/policy"
)

// Replies the proxy itself gives (docs/behaviour.md, the behaviour contract).
var (
	errMustStartTLS = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Must issue a STARTTLS command first"}
	errAuthInvalid  = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
	errAuthTempFail = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure"}
	errAuthThrottle = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many failed authentication attempts, try again later"}
	errAuthTryLater = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many authentication attempts, try again later"}
	errAuthBusy     = &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many logins in progress, try again later"}
	errAuthInTx     = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "AUTH not permitted during a mail transaction"}
	errNullRcpt     = &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Recipient address syntax error"}
	errTxBroken     = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 4, 1}, Message: "Backend connection lost, please start over"}
	errStalledData  = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Timeout waiting for data, closing connection"}
	errLineTooLong  = &smtp.SMTPError{Code: 500, EnhancedCode: smtp.EnhancedCode{5, 4, 0}, Message: "Line too long"}
	errClientGone   = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 0}, Message: "Connection error"}
)

// smtpBackend is go-smtp's Backend for one listener.
type smtpBackend struct {
	srv *Server
	lc  ListenerConfig
}

// NewSession runs at the first EHLO/HELO, and again at the first EHLO after
// STARTTLS (go-smtp then forgets all earlier state, as RFC 3207 4.2 asks).
func (b *smtpBackend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	rec := b.srv.record(c.Conn())
	if rec == nil {
		return nil, errors.New("proxy: connection not tracked")
	}
	s := &session{srv: b.srv, lc: b.lc, c: c, helo: c.Hostname(), conn: rec}
	if nc, ok := c.Conn().(*tls.Conn); ok {
		st := nc.ConnectionState()
		s.tls = &st
		rec.c.setIdle(b.srv.limits.CommandTimeout)
		if rec.upgradedNow() {
			// First session after STARTTLS: count the handshake, and let
			// shutdown write its 421 inside TLS.
			b.srv.metrics.handshakes.WithLabelValues(b.lc.Name, "starttls", tlsVersionWord(st.Version), "ok").Inc()
			b.srv.served(rec, nc)
		}
		rec.summary(func(sum *sessionSummary) {
			sum.tlsVersion = tlsVersionWord(st.Version)
			sum.cipher = cipherName(st.CipherSuite)
			sum.sni = st.ServerName
		})
	}
	rec.summary(func(sum *sessionSummary) { sum.helo = s.helo })
	return s, nil
}

// session is one go-smtp session: from EHLO to QUIT, or to STARTTLS.
type session struct {
	srv  *Server
	lc   ListenerConfig
	c    *smtp.Conn
	conn *sessionRecord       // the client connection, across STARTTLS
	tls  *tls.ConnectionState // nil before TLS
	helo string

	mu        sync.Mutex // go-smtp calls Reset and Logout while a BDAT Data runs
	user      string     // authenticated user; "" if none
	groups    []string   // the user's groups and addresses in the source that
	addresses []string   // accepted the password, for the policy
	tx        *transaction
	dataTx    *transaction // the transaction Data is streaming, if any
	abortData func()       // aborts that stream
	leg       backendLeg   // this session's use of the backend; nil until needed
}

var (
	_ smtp.Session     = (*session)(nil)
	_ smtp.AuthSession = (*session)(nil)
)

// facts are what the policy judges this session by.
func (s *session) facts() policy.Session {
	return policy.Session{Listener: s.lc.Name, TLS: s.tls != nil, User: s.user, ClientIP: s.conn.ip,
		Groups: s.groups, Addresses: s.addresses}
}

// reply is the one place where errors become SMTP replies: a bare
// *smtp.SMTPError passes unchanged, anything else is logged with the session
// id and becomes a 451 4.3.0 that discloses nothing.
func (s *session) reply(err error) error {
	if err == nil {
		return nil
	}
	if se, ok := err.(*smtp.SMTPError); ok {
		return se
	}
	s.srv.log.Error("internal error", zap.String("session", s.conn.id), zap.Error(err))
	return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message: "Internal error, please try again later (session " + s.conn.id + ")"}
}

func policyReply(r policy.Reply) *smtp.SMTPError {
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: smtp.EnhancedCode(r.Enhanced), Message: r.Text}
}

// AuthMechanisms lists PLAIN and LOGIN where this listener offers AUTH.
// go-smtp advertises them only after TLS.
func (s *session) AuthMechanisms() []string {
	if !s.lc.Auth || s.srv.auth.Load().a == nil {
		return nil
	}
	return []string{sasl.Plain, sasl.Login}
}

// Auth starts a SASL exchange. go-smtp has already refused AUTH before TLS
// (523 5.7.10) and a second AUTH (503 5.5.1) without reading credentials.
func (s *session) Auth(mech string) (sasl.Server, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.srv.auth.Load().a
	if !s.lc.Auth || a == nil {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	if s.tx != nil || s.dataTx != nil {
		return nil, errAuthInTx
	}
	addr := auth.AddrKey(s.conn.ip)
	if s.srv.throttle.Blocked(addr) {
		s.srv.metrics.auth.WithLabelValues(s.lc.Name, mech, "throttled").Inc()
		s.conn.closeAfterReply("auth throttled")
		return nil, errAuthThrottle
	}
	check := func(identity, user, pass string) error { return s.authenticate(a, mech, identity, user, pass) }
	malformed := func() error {
		return s.authReply(s.authLog(mech), mech, "", s.srv.throttle.Malformed(s.conn.ip, "malformed SASL response"))
	}
	switch mech {
	case sasl.Plain:
		return saslGuard{sasl.NewPlainServer(check), malformed}, nil
	case sasl.Login:
		return saslGuard{auth.NewLoginServer(check), malformed}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// authLog is the logger of an AUTH attempt.
func (s *session) authLog(mech string) *zap.Logger {
	return s.srv.log.With(zap.String("session", s.conn.id), zap.String("listener", s.lc.Name),
		zap.Stringer("client_ip", s.conn.ip), zap.String("mechanism", mech))
}

// authenticate checks one set of credentials through the throttle
// (auth.Throttle.Login: paid for in every budget before anything is
// checked, the check in one of a bounded number of slots). It never logs
// the password.
func (s *session) authenticate(a auth.Source, mech, identity, user, pass string) error {
	log := s.authLog(mech).With(zap.String("user", user))
	o := s.srv.throttle.Login(context.Background(), s.srv.cfg.Backend.Timeout+5*time.Second, a, s.conn.ip, identity, user, pass)
	return s.authReply(log, mech, user, o)
}

// authReply turns a throttle outcome into the SMTP reply, with its metric
// and log line. A failure is answered after the delay, which slows
// guessing down (it holds only this session's goroutine); when the
// address, or the user at it, is spent the connection ends with 421. A
// refusal before any check is 421 and a hang-up when this address (or this
// user at it) is spent, else 454 after the delay, which keeps a client
// retrying in a loop slow.
func (s *session) authReply(log *zap.Logger, mech, user string, o auth.Outcome) error {
	count := func(result string) { s.srv.metrics.auth.WithLabelValues(s.lc.Name, mech, result).Inc() }
	if o.Source != "" {
		log = log.With(zap.String("source", o.Source))
	}
	switch o.Verdict {
	case auth.LoginOK:
		s.user, s.groups, s.addresses = user, o.Identity.Groups, o.Identity.Addresses
		s.conn.summary(func(sum *sessionSummary) { sum.user = user })
		count("success")
		log.Info("auth succeeded", zap.Bool("password_checked", true), zap.Bool("known_address", o.Known))
		return nil
	case auth.LoginFailed, auth.LoginFailedOver:
		over := o.Verdict == auth.LoginFailedOver
		count("failure")
		log.Warn("auth failed", zap.String("reason", o.Reason), zap.Bool("password_checked", o.Checked), zap.Bool("throttled", over))
		time.Sleep(s.srv.limits.AuthFailDelay)
		if over {
			s.conn.closeAfterReply("auth throttled")
			return errAuthThrottle
		}
		return errAuthInvalid
	case auth.LoginRefused, auth.LoginRefusedHangUp:
		count("throttled")
		log.Warn("auth refused", zap.String("reason", o.Reason), zap.Bool("password_checked", false))
		if o.Verdict == auth.LoginRefusedHangUp {
			s.conn.closeAfterReply("auth throttled")
			return errAuthThrottle
		}
		time.Sleep(s.srv.limits.AuthFailDelay)
		return errAuthTryLater
	case auth.LoginBusy:
		count("busy")
		log.Warn("auth refused", zap.String("reason", o.Reason), zap.Bool("password_checked", false))
		return errAuthBusy
	}
	count("error")
	log.Error("auth check failed", zap.Error(o.Err))
	return errAuthTempFail
}

// Mail starts a transaction.
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lc.RequireTLS && s.tls == nil {
		return errMustStartTLS
	}
	addr, err := policy.ParseAddress(from, opts.UTF8)
	if err != nil {
		return s.reply(addressReply(err))
	}
	s.endTx("") // a MAIL without RSET after a failed transaction
	// One policy judges the whole transaction, even if a reload happens.
	pol := s.srv.policy.Load()
	if err := s.policyMail(pol, addr, opts); err != nil {
		return err
	}
	// The client's AUTH= parameter is never forwarded as given (RFC 4954
	// 5: only a trusted, authenticated party may assert it).
	fwd := *opts
	fwd.Auth = nil
	s.tx = &transaction{pol: pol, from: addr, opts: &fwd, start: time.Now()}
	return nil
}

// replyText renders a reply for logs: "550 5.7.1 text".
func replyText(err error) string {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return err.Error()
	}
	if se.EnhancedCode == smtp.EnhancedCodeNotSet || se.EnhancedCode == smtp.NoEnhancedCode {
		return fmt.Sprintf("%d %s", se.Code, se.Message)
	}
	ec := se.EnhancedCode
	return fmt.Sprintf("%d %d.%d.%d %s", se.Code, ec[0], ec[1], ec[2], se.Message)
}

func addressReply(err error) error {
	var ae *policy.AddressError
	if errors.As(err, &ae) {
		return policyReply(ae.Reply)
	}
	return err
}

// Rcpt judges one recipient; one the policy accepts goes on to the
// backend, whose own refusal the client gets verbatim.
func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx := s.tx
	if tx == nil {
		return s.reply(errors.New("RCPT without a transaction"))
	}
	rcpt, err := policy.ParseAddress(to, tx.opts.UTF8)
	if err != nil {
		tx.note(to, "syntax", err.Error())
		return s.reply(addressReply(err))
	}
	if rcpt.IsNull() {
		return errNullRcpt
	}
	d := s.policyRcpt(tx, rcpt) // rules, recipient limit, rate limits
	s.srv.countDecision(s.lc.Name, d)
	if d.Action != policy.Accept {
		tx.note(rcpt.String(), d.Rule, d.Reply.String())
		return policyReply(d.Reply)
	}
	if tx.up != nil && tx.up.Broken() {
		return errTxBroken
	}
	opts = s.rcptOptions(tx, opts)
	if tx.up == nil {
		// The first accepted recipient begins the backend transaction (its
		// MAIL goes with this RCPT).
		tx.up = s.backendLeg().Begin(tx.from.String(), tx.opts, s.class())
	}
	if err := tx.up.Rcpt(context.Background(), rcpt.String(), opts); err != nil {
		return s.backendRefused(tx, rcpt, d.Rule, err)
	}
	tx.rcpts = append(tx.rcpts, rcpt)
	tx.rules = append(tx.rules, d.Rule)
	return nil
}

// backendLeg is this session's use of the backend, started when first
// needed.
func (s *session) backendLeg() backendLeg {
	if s.leg == nil {
		s.leg = upstreamLeg{s.srv.backend.Leg()}
	}
	return s.leg
}

// class is whose backend connection slots the session may use.
func (s *session) class() upstream.Class {
	if s.user != "" {
		return upstream.Authenticated
	}
	return upstream.Unauthenticated
}

// backendRefused answers a recipient the backend leg did not take: the
// backend's own refusal verbatim, or 451 4.4.1 when it gave none.
func (s *session) backendRefused(tx *transaction, rcpt policy.Address, rule string, err error) error {
	ue, ok := err.(*upstream.Error)
	if !ok {
		return errTxBroken
	}
	se := backendReply(ue)
	id := zap.String("session", s.conn.id)
	switch ue.Stage {
	case upstream.StageReplay:
		s.srv.log.Warn("backend transaction not reopened", id, zap.Error(ue.Err))
		return se
	case upstream.StageConnect:
		s.srv.log.Warn("backend unreachable", id, zap.Error(ue.Err))
	case upstream.StageMail:
		if ue.Reply == nil {
			s.srv.log.Warn("backend failed at MAIL", id, zap.Error(ue.Err))
		}
	default:
		if ue.Reply == nil {
			s.srv.log.Warn("backend failed at RCPT", id, zap.Error(ue.Err))
		}
		rule = "backend"
	}
	tx.note(rcpt.String(), rule, replyText(se))
	return se
}

// Data streams the message to the backend and answers with the backend's
// own reply: 250 only once the backend said 250.
func (s *session) Data(r io.Reader) error {
	// Data owns the transaction while it streams, without holding s.mu:
	// with BDAT, go-smtp runs Data in its own goroutine and meanwhile calls
	// Auth, Reset or Logout from the command loop. Those must not wait for
	// a transfer that only the command loop can feed; Reset and Logout abort
	// it instead (abortData).
	s.mu.Lock()
	tx := s.tx
	if tx == nil || tx.up == nil || len(tx.rcpts) == 0 || tx.up.Broken() {
		s.mu.Unlock()
		return errTxBroken
	}
	s.tx, s.dataTx = nil, tx
	pipe, _ := r.(*io.PipeReader)
	up := tx.up
	s.abortData = func() {
		tx.aborted.Store(true)
		if pipe != nil {
			pipe.CloseWithError(smtp.ErrDataReset)
		}
		up.Abort() // unblocks a write to the backend; no final dot is sent
	}
	s.mu.Unlock()

	s.conn.setData(true, s.srv.limits.DataTimeout)
	res, err := up.Data(context.Background(), receivedHeader(s, tx), s.policyDataLimit(tx, r))
	s.conn.setData(false, s.srv.limits.CommandTimeout)
	if res.Latency > 0 {
		s.srv.metrics.deliveryLatency.WithLabelValues(s.lc.Name).Observe(res.Latency.Seconds())
	}
	if err != nil {
		err = s.dataError(err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.dataTx, s.abortData = nil, nil
	tx.bytes = res.Bytes
	tx.done = true
	s.srv.metrics.messageBytes.WithLabelValues(s.lc.Name).Add(float64(res.Bytes))
	if err == nil && tx.aborted.Load() {
		err = errClientGone
	}
	if err != nil {
		tx.result = replyText(err)
		s.srv.metrics.messages.WithLabelValues(s.lc.Name, messageOutcome(err)).Inc()
		if res.Spooled {
			s.srv.metrics.spooled.WithLabelValues(s.lc.Name, messageOutcome(err)).Inc()
		}
		s.finishTx(tx)
		return s.reply(err)
	}
	tx.result = replyText(res.Reply)
	tx.delivered = true
	s.srv.metrics.messages.WithLabelValues(s.lc.Name, "delivered").Inc()
	if res.Spooled {
		s.srv.metrics.spooled.WithLabelValues(s.lc.Name, "delivered").Inc()
	}
	s.finishTx(tx)
	return res.Reply
}

// messageOutcome classifies a failed DATA for the metrics: the backend or a
// rule refused it (5xx), or it failed and the client will retry (4xx).
func messageOutcome(err error) string {
	var se *smtp.SMTPError
	if errors.As(err, &se) && se.Code >= 500 {
		return "rejected"
	}
	return "failed"
}

// dataError chooses the reply for a DATA transfer that did not end in the
// backend's 250.
func (s *session) dataError(err error) error {
	id := zap.String("session", s.conn.id)
	var ue *upstream.Error
	var se *smtp.SMTPError
	switch {
	case errors.As(err, &ue):
		switch {
		case ue.Stage == upstream.StageReplay:
			s.srv.log.Warn("spooled message not sent", id, zap.Error(ue.Err))
		case ue.Reply == nil:
			s.srv.log.Warn("backend failed during DATA", id, zap.Error(ue.Err))
		}
		return backendReply(ue)
	case errors.Is(err, upstream.ErrBroken):
		return errTxBroken
	case errors.As(err, &se) && se.Code != 250:
		// Ours (NUL, bare line endings, the policy's size limit) or
		// go-smtp's (size exceeded, 552 5.3.4).
		return se
	case errors.Is(err, smtp.ErrTooLongLine):
		return errLineTooLong
	case s.conn.timedOut():
		return errStalledData
	case errors.Is(err, smtp.ErrDataReset):
		return errClientGone
	}
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		s.srv.log.Warn("backend timed out during DATA", id, zap.Error(err))
		return errBackendFailed
	}
	// A read error from the client (gone mid-DATA): nothing was accepted.
	s.srv.log.Info("DATA aborted", id, zap.Error(err))
	return errBackendFailed
}

// Reset ends the current transaction (RSET, a new EHLO, or after DATA).
func (s *session) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopData()
	s.endTx("reset")
}

// Logout ends the session (QUIT, close, or STARTTLS).
func (s *session) Logout() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.stopData()
	s.endTx("logout")
	if s.leg != nil {
		s.leg.Close()
		s.leg = nil
	}
	return nil
}

// stopData aborts a BDAT transfer still running in go-smtp's goroutine; that
// goroutine finishes and logs the transaction itself.
func (s *session) stopData() {
	if s.abortData != nil {
		s.abortData()
		s.abortData = nil
	}
}

// endTx closes the current transaction, if any, when it ends without DATA.
func (s *session) endTx(why string) {
	tx := s.tx
	if tx == nil {
		return
	}
	s.tx = nil
	if tx.up != nil {
		// MAIL/RCPT were mirrored but no DATA completed: drop that backend
		// transaction entirely rather than trust an RSET on a legacy server.
		tx.up.Abort()
	}
	if !tx.done && why != "" && tx.result == "" {
		tx.result = "no data (" + why + ")"
	}
	s.finishTx(tx)
}

// finishTx counts and logs a finished transaction.
func (s *session) finishTx(tx *transaction) {
	s.conn.summary(func(sum *sessionSummary) {
		sum.transactions++
		if tx.delivered {
			sum.accepted++
		}
	})
	s.srv.logTransaction(s, tx)
}

// transaction is one MAIL..DATA exchange.
type transaction struct {
	pol       *policy.Policy // the policy in force when MAIL was given
	from      policy.Address
	opts      *smtp.MailOptions
	rcpts     []policy.Address // accepted by the policy and the backend
	rules     []string         // the rule that accepted each recipient
	refused   []refusal
	check     string       // the check that decided the last recipient (policyRcpt)
	shadow    []shadowNote // what shadow rules would have decided (bounded)
	dsnStrip  []string     // DSN parameters not forwarded (DSNMode), for the log
	up        backendTx    // from the first accepted recipient on
	aborted   atomic.Bool  // Reset or Logout cut a running transfer short
	start     time.Time
	bytes     int64
	done      bool
	delivered bool
	result    string
}

type refusal struct {
	rcpt, rule, reply string
	check             string // which check decided: policyRcpt's word, "" before it ran
	before            int    // recipients accepted before this one
}

// note records a refused recipient for the transaction log (bounded).
func (tx *transaction) note(rcpt, rule, reply string) {
	if len(tx.refused) < 20 {
		tx.refused = append(tx.refused, refusal{rcpt, rule, reply, tx.check, len(tx.rcpts)})
	}
	tx.check = ""
}
