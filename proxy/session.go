package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/tlsguard/tlsguard/internal/auth"
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
	s := &session{srv: b.srv, lc: b.lc, c: c, helo: c.Hostname()}
	switch nc := c.Conn().(type) {
	case *tls.Conn:
		s.conn = nc.NetConn().(*conn)
		st := nc.ConnectionState()
		s.tls = &st
		s.conn.setIdle(b.srv.limits.CommandTimeout)
		if s.conn.upgraded() {
			// First session after STARTTLS: count the handshake, and let
			// shutdown write its 421 inside TLS.
			b.srv.metrics.handshakes.WithLabelValues(b.lc.Name, "starttls", tlsVersionWord(st.Version), "ok").Inc()
			b.srv.track(nc)
		}
		s.conn.summary(func(sum *sessionSummary) {
			sum.tlsVersion = tlsVersionWord(st.Version)
			sum.cipher = cipherName(st.CipherSuite)
			sum.sni = st.ServerName
		})
	case *conn:
		s.conn = nc
	default:
		return nil, errors.New("proxy: unexpected connection type")
	}
	s.conn.summary(func(sum *sessionSummary) { sum.helo = s.helo })
	return s, nil
}

// session is one go-smtp session: from EHLO to QUIT, or to STARTTLS.
type session struct {
	srv  *Server
	lc   ListenerConfig
	c    *smtp.Conn
	conn *conn
	tls  *tls.ConnectionState // nil before TLS
	helo string

	mu        sync.Mutex // go-smtp calls Reset and Logout while a BDAT Data runs
	user      string     // authenticated user; "" if none
	groups    []string   // the user's groups and addresses in the source that
	addresses []string   // accepted the password, for the policy
	tx        *transaction
	dataTx    *transaction // the transaction Data is streaming, if any
	abortData func()       // aborts that stream
	idle      *backendConn // backend connection kept from the last transaction
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
		log := s.authLog(mech)
		over, ref := s.srv.throttle.FailAddr(addr)
		if ref != nil {
			return s.authRefused(log, mech, ref)
		}
		return s.authFailed(log, mech, over, false, "malformed SASL response")
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

// authenticate checks one set of credentials. The attempt is paid for in
// every budget that applies before anything is checked, and the check runs
// in one of a bounded number of slots. It never logs the password.
func (s *session) authenticate(a auth.Source, mech, identity, user, pass string) error {
	th := s.srv.throttle
	addr := auth.AddrKey(s.conn.ip)
	log := s.authLog(mech).With(zap.String("user", user))
	if !validUserName(user) {
		over, ref := th.FailAddr(addr)
		if ref != nil {
			return s.authRefused(log, mech, ref)
		}
		return s.authFailed(log, mech, over, false, "bad user name")
	}
	// Budgets count a name case-insensitively: a backend that ignores case
	// (Dovecot lowercases by default) would otherwise give every spelling
	// of a name its own budget.
	who := strings.ToLower(user)
	known := th.Known(who, addr)
	res, ref := th.Reserve(who, addr, known)
	if ref != nil {
		return s.authRefused(log, mech, ref)
	}
	// RFC 4616: an authorization identity other than the login would let one
	// user act as another; the legacy backend cannot check it, so refuse it.
	if identity != "" && identity != user {
		return s.authFailed(log, mech, res.Fail(), false, "authorization identity differs from login")
	}
	id, err := s.check(a, user, pass, known)
	source := id.Source // the source that decided, for the log
	if err != nil {
		source = auth.SourceOf(err)
	}
	if source != "" {
		log = log.With(zap.String("source", source))
	}
	if err == errAuthBusy {
		res.Refund()
		s.srv.metrics.auth.WithLabelValues(s.lc.Name, mech, "busy").Inc()
		log.Warn("auth refused", zap.String("reason", "no free check slot"), zap.Bool("password_checked", false))
		return errAuthBusy
	}
	if auth.Temporary(err) {
		res.Refund()
		s.srv.metrics.auth.WithLabelValues(s.lc.Name, mech, "error").Inc()
		log.Error("auth check failed", zap.Error(err))
		return errAuthTempFail
	}
	if err != nil {
		return s.authFailed(log, mech, res.Fail(), true, "bad credentials")
	}
	res.Refund()
	th.Remember(who, addr)
	s.user, s.groups, s.addresses = user, id.Groups, id.Addresses
	s.conn.summary(func(sum *sessionSummary) { sum.user = user })
	s.srv.metrics.auth.WithLabelValues(s.lc.Name, mech, "success").Inc()
	log.Info("auth succeeded", zap.Bool("password_checked", true), zap.Bool("known_address", known))
	return nil
}

// check runs the credential source in a check slot; errAuthBusy means no
// slot came free in time.
func (s *session) check(a auth.Source, user, pass string, known bool) (auth.Identity, error) {
	release, ok := s.srv.throttle.Acquire(known)
	if !ok {
		return auth.Identity{}, errAuthBusy
	}
	defer release()
	ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.Backend.Timeout+5*time.Second)
	defer cancel()
	return a.Authenticate(ctx, user, pass)
}

// authFailed refuses an attempt counted as a failure, after the delay; when
// the address, or the user at it, has reached its limit it ends the
// connection with 421. checked says whether a password was checked.
func (s *session) authFailed(log *zap.Logger, mech string, over, checked bool, why string) error {
	s.srv.metrics.auth.WithLabelValues(s.lc.Name, mech, "failure").Inc()
	log.Warn("auth failed", zap.String("reason", why), zap.Bool("password_checked", checked), zap.Bool("throttled", over))
	// The delay slows guessing down; it holds only this session's goroutine.
	time.Sleep(s.srv.limits.AuthFailDelay)
	if over {
		s.conn.closeAfterReply("auth throttled")
		return errAuthThrottle
	}
	return errAuthInvalid
}

// authRefused answers an attempt refused before any check: 421 and a
// hang-up when this address (or this user at it) is spent, else 454 after
// the failure delay, which keeps a client retrying in a loop slow.
func (s *session) authRefused(log *zap.Logger, mech string, ref *auth.Refusal) error {
	s.srv.metrics.auth.WithLabelValues(s.lc.Name, mech, "throttled").Inc()
	log.Warn("auth refused", zap.String("reason", ref.Why), zap.Bool("password_checked", false))
	if ref.HangUp {
		s.conn.closeAfterReply("auth throttled")
		return errAuthThrottle
	}
	time.Sleep(s.srv.limits.AuthFailDelay)
	return errAuthTryLater
}

// validUserName refuses empty, overlong and control-character names before
// they reach a log line or the credential store.
func validUserName(u string) bool {
	if u == "" || len(u) > 256 {
		return false
	}
	for i := 0; i < len(u); i++ {
		if u[i] < 0x20 || u[i] == 0x7f {
			return false
		}
	}
	return true
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

// Rcpt judges one recipient and mirrors it to the backend.
func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tx := s.tx
	if tx == nil {
		return s.reply(errors.New("RCPT without a transaction"))
	}
	defer func() {
		if tx.bc != nil && !tx.broken {
			s.holdBackend(tx)
		}
	}()
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
	if tx.broken {
		return errTxBroken
	}
	opts = s.rcptOptions(tx, opts)
	if tx.bc == nil && len(tx.rcpts) > 0 {
		// The connection was freed while the client paused (holdBackend):
		// open the transaction again with the recipients accepted so far.
		bc, rerr := s.replay(tx)
		if rerr != nil {
			s.srv.log.Warn("backend transaction not reopened", zap.String("session", s.conn.id), zap.Error(rerr))
			tx.broken = true
			return errBackendFailed
		}
		tx.bc = bc
		err = bc.c.Rcpt(rcpt.String(), opts)
	} else if tx.bc == nil {
		// The first accepted recipient opens the backend transaction: MAIL
		// and this RCPT, in one write when the backend pipelines.
		var merr error
		if merr, err = s.openBackend(tx, rcpt.String(), opts); merr != nil {
			se := backendReply(merr)
			tx.note(rcpt.String(), d.Rule, replyText(se))
			return se
		}
	} else {
		err = tx.bc.c.Rcpt(rcpt.String(), opts)
	}
	if err != nil {
		se := backendReply(err)
		if se == errBackendFailed {
			s.srv.metrics.backendErrors.WithLabelValues("rcpt").Inc()
			s.srv.log.Warn("backend failed at RCPT", zap.String("session", s.conn.id), zap.Error(err))
			tx.breakOff()
		} else {
			s.srv.metrics.backendReplies.WithLabelValues("rcpt", codeLabel(se.Code)).Inc()
		}
		tx.note(rcpt.String(), "backend", replyText(se))
		return se
	}
	tx.rcpts = append(tx.rcpts, rcpt)
	tx.rcptOpts = append(tx.rcptOpts, opts)
	tx.rules = append(tx.rules, d.Rule)
	return nil
}

// holdBackend frees the transaction's backend connection if the client
// sends neither another RCPT nor DATA within SpoolAfter: a client pausing
// between commands must not hold a backend slot meanwhile. The next RCPT
// or the end of DATA opens the transaction again (replay). s.mu is held.
func (s *session) holdBackend(tx *transaction) {
	after := s.srv.backend.cfg.SpoolAfter
	tx.lastUse = time.Now()
	if tx.idleTimer != nil {
		tx.idleTimer.Reset(after)
		return
	}
	tx.idleTimer = time.AfterFunc(after, func() {
		s.mu.Lock()
		bc := tx.bc
		if s.tx != tx || bc == nil || time.Since(tx.lastUse) < after {
			s.mu.Unlock()
			return
		}
		tx.bc = nil
		s.mu.Unlock()
		bc.quit() // the backend drops the open transaction
	})
}

// openBackend takes a backend connection (this session's idle one, one
// from the pool, or a new one) and sends MAIL and the first RCPT, pipelined
// (RFC 2920) when the backend offers PIPELINING. mailErr is set when there
// is no backend transaction (unreachable, or MAIL failed or was refused);
// rcptErr is RCPT's outcome otherwise. A pooled connection that the backend
// closed meanwhile fails at MAIL, before anything is committed: it is
// replaced by a fresh one once.
func (s *session) openBackend(tx *transaction, rcpt string, opts *smtp.RcptOptions) (mailErr, rcptErr error) {
	for attempt := 0; ; attempt++ {
		bc := s.idle
		s.idle = nil
		if bc == nil {
			ctx, cancel := context.WithTimeout(context.Background(), s.srv.cfg.Backend.Timeout)
			var err error
			bc, err = s.srv.backend.get(ctx, s.user != "")
			cancel()
			if err != nil {
				s.srv.metrics.backendErrors.WithLabelValues("connect").Inc()
				s.srv.log.Warn("backend unreachable", zap.String("session", s.conn.id), zap.Error(err))
				return err, nil
			}
		}
		err, rerr := bc.c.MailRcpt(tx.from.String(), backendMailOptions(bc, tx.opts), rcpt, opts)
		if err == nil {
			s.srv.metrics.backendReplies.WithLabelValues("mail", "250").Inc()
			tx.bc = bc
			return nil, rerr
		}
		bc.abort()
		if se := backendReply(err); se != errBackendFailed {
			s.srv.metrics.backendReplies.WithLabelValues("mail", codeLabel(se.Code)).Inc()
			return err, nil
		}
		s.srv.metrics.backendErrors.WithLabelValues("mail").Inc()
		if !bc.reused || attempt > 0 {
			s.srv.log.Warn("backend failed at MAIL", zap.String("session", s.conn.id), zap.Error(err))
			return err, nil
		}
	}
}

// backendMailOptions adapts the client's MAIL parameters to bc: a backend
// that does not offer 8BITMIME gets an 8-bit message undeclared (RFC 6152 3
// leaves a relay to convert or send as is; go-smtp's client refuses to
// declare BODY=8BITMIME to such a server), as tlsguard cannot convert it.
func backendMailOptions(bc *backendConn, opts *smtp.MailOptions) *smtp.MailOptions {
	if opts.Body != smtp.Body8BitMIME {
		return opts
	}
	if ok, _ := bc.c.Extension("8BITMIME"); ok {
		return opts
	}
	o := *opts
	o.Body = ""
	return &o
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
	if tx == nil || (tx.bc == nil && len(tx.rcpts) == 0) || tx.broken {
		s.mu.Unlock()
		return errTxBroken
	}
	s.tx, s.dataTx = nil, tx
	tx.stopIdleTimer()
	pipe, _ := r.(*io.PipeReader)
	bc := tx.bc // nil: freed while the client paused; sent from the spool
	s.abortData = func() {
		tx.aborted.Store(true)
		if pipe != nil {
			pipe.CloseWithError(smtp.ErrDataReset)
		}
		if bc != nil {
			bc.abort() // unblocks a write to the backend; no final dot is sent
		}
	}
	s.mu.Unlock()

	s.conn.setData(true, s.srv.limits.DataTimeout)
	res, n, err := s.forward(tx, s.policyDataLimit(tx, r))
	s.conn.setData(false, s.srv.limits.CommandTimeout)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.dataTx, s.abortData = nil, nil
	tx.bytes = n
	tx.done = true
	s.srv.metrics.messageBytes.WithLabelValues(s.lc.Name).Add(float64(n))
	if err == nil && tx.aborted.Load() {
		err = errClientGone
	}
	if err != nil {
		tx.result = replyText(err)
		s.srv.metrics.messages.WithLabelValues(s.lc.Name, messageOutcome(err)).Inc()
		if tx.spooled {
			s.srv.metrics.spooled.WithLabelValues(s.lc.Name, messageOutcome(err)).Inc()
		}
		s.finishTx(tx)
		return s.reply(err)
	}
	tx.result = replyText(res)
	tx.delivered = true
	s.srv.metrics.messages.WithLabelValues(s.lc.Name, "delivered").Inc()
	if tx.spooled {
		s.srv.metrics.spooled.WithLabelValues(s.lc.Name, "delivered").Inc()
	}
	// The backend is in a clean state after a completed DATA: it goes back
	// to the pool, so a session idle between transactions holds no backend
	// slot (the pool is last in, first out: this session's next MAIL most
	// likely gets it back). Without a pool, the session keeps it. The
	// backend may still close it while idle (its own timeout): reused lets
	// the next MAIL retry once.
	if s.srv.backend.cfg.PoolSize > 0 {
		s.srv.backend.put(tx.bc)
	} else {
		s.idle = tx.bc
		s.idle.reused = true
	}
	tx.bc = nil
	s.finishTx(tx)
	return res
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

// forward does the DATA exchange. The returned reply is the backend's 250 as
// an *smtp.SMTPError (go-smtp's way of sending a custom success text).
//
// The message goes normalizer → stuffer → one buffered writer straight to
// the backend connection, a chunk at a time, the end-of-data dot in the same
// write as the message's tail; go-smtp's client only sends DATA and reads the
// reply, so its reader and writer stay in step with the connection.
func (s *session) forward(tx *transaction, r io.Reader) (*smtp.SMTPError, int64, error) {
	bc := tx.bc
	var w *smtp.RawDataCommand
	var err error
	if bc != nil {
		if w, err = bc.c.RawData(); err != nil {
			se := backendReply(err)
			tx.breakOff()
			return nil, 0, se
		}
	}
	bufs := dataBufPool.Get().(*dataBufs)
	sp := newSpool(s.srv.backend.cfg.SpoolDir)
	bufs.bw.Reset(sp)
	defer func() {
		bufs.bw.Reset(nil)
		dataBufPool.Put(bufs)
		sp.Close()
	}()
	// A client that has not sent its whole message within SpoolAfter gives
	// its backend connection up: dropped without the final dot (the backend
	// discards the transaction), its slot free for others. The message is
	// kept in the spool and sent on a new connection once complete.
	var mu sync.Mutex
	finished, released := false, bc == nil
	if bc != nil {
		timer := time.AfterFunc(s.srv.backend.cfg.SpoolAfter, func() {
			mu.Lock()
			defer mu.Unlock()
			if !finished {
				released = true
				bc.abort()
			}
		})
		defer timer.Stop()
	}
	st := &stuffer{w: bufs.bw}
	nw := &normalizer{w: st, reject: s.srv.cfg.BareLineEndings == BareReject}
	_, werr := io.WriteString(st, receivedHeader(s, tx))
	var n int64
	if werr == nil {
		n, err = io.CopyBuffer(nw, r, bufs.copy)
		if err == nil {
			err = nw.flush()
		}
	}
	if werr == nil && err == nil {
		if err = st.end(); err == nil {
			err = bufs.bw.Flush()
		}
	}
	mu.Lock()
	finished = true
	mu.Unlock()
	if werr != nil || err != nil {
		// Abort without the final dot: the backend discards the message.
		tx.breakOff()
		return nil, n, s.dataError(r, werr, err)
	}
	if released {
		tx.spooled, tx.bc = true, nil
		if bc, err = s.replay(tx); err != nil {
			tx.broken = true
			s.srv.log.Warn("spooled message not sent", zap.String("session", s.conn.id), zap.Error(err))
			return nil, n, errBackendFailed
		}
		tx.bc = bc
		if w, err = bc.c.RawData(); err != nil {
			s.srv.log.Warn("spooled message not sent", zap.String("session", s.conn.id), zap.Error(err))
			tx.breakOff()
			return nil, n, errBackendFailed
		}
	}
	if _, err := sp.WriteTo(w); err != nil {
		s.srv.log.Warn("backend failed during DATA", zap.String("session", s.conn.id), zap.Error(err))
		tx.breakOff()
		return nil, n, errBackendFailed
	}
	sent := time.Now()
	// RFC 5321 4.5.3.2.6: the server may take 10 minutes to answer the dot
	// (it scans or queues the message meanwhile). The client waits as long:
	// nothing is read from or written to it until this reply is there.
	restore := bc.awaitFinal(s.srv.backend.cfg.DataDoneTimeout)
	resp, err := w.Response()
	restore()
	s.srv.metrics.deliveryLatency.WithLabelValues(s.lc.Name).Observe(time.Since(sent).Seconds())
	if err != nil {
		se := backendReply(err)
		if se == errBackendFailed {
			s.srv.metrics.backendErrors.WithLabelValues("data").Inc()
		} else {
			s.srv.metrics.backendReplies.WithLabelValues("data", codeLabel(se.Code)).Inc()
		}
		tx.breakOff()
		return nil, n, se
	}
	s.srv.metrics.backendReplies.WithLabelValues("data", "250").Inc()
	ec, text, ok := splitEnhanced(flatten(resp.StatusText))
	if !ok {
		ec, text = smtp.EnhancedCode{2, 0, 0}, flatten(resp.StatusText)
	}
	return &smtp.SMTPError{Code: 250, EnhancedCode: ec, Message: text}, n, nil
}

// replay opens a new backend transaction for a spooled message: MAIL and
// the first RCPT pipelined, then the other RCPTs, with the client's
// parameters. The client was told 250 for each recipient already, so any
// refusal now is a temporary failure for the whole message (the client
// retries; nothing was stored). A pooled connection that went stale is
// replaced once, as in openBackend.
func (s *session) replay(tx *transaction) (*backendConn, error) {
	for attempt := 0; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), s.srv.backend.cfg.Timeout)
		bc, err := s.srv.backend.get(ctx, s.user != "")
		cancel()
		if err != nil {
			s.srv.metrics.backendErrors.WithLabelValues("connect").Inc()
			return nil, err
		}
		var merr, rerr error
		if len(tx.rcpts) == 0 {
			merr = bc.c.Mail(tx.from.String(), tx.opts)
		} else {
			merr, rerr = bc.c.MailRcpt(tx.from.String(), tx.opts, tx.rcpts[0].String(), tx.rcptOpts[0])
		}
		for i := 1; merr == nil && rerr == nil && i < len(tx.rcpts); i++ {
			rerr = bc.c.Rcpt(tx.rcpts[i].String(), tx.rcptOpts[i])
		}
		if merr == nil && rerr == nil {
			return bc, nil
		}
		bc.abort()
		if merr != nil && backendReply(merr) == errBackendFailed && bc.reused && attempt == 0 {
			continue
		}
		return nil, fmt.Errorf("replaying the transaction: %w", errors.Join(merr, rerr))
	}
}

// dataError chooses the reply for a DATA transfer that could not finish.
func (s *session) dataError(r io.Reader, werr, err error) error {
	var se *smtp.SMTPError
	switch {
	case werr != nil:
		s.srv.log.Warn("backend failed during DATA", zap.String("session", s.conn.id), zap.Error(werr))
		return errBackendFailed
	case errors.As(err, &se) && se.Code != 250:
		// Ours (NUL, bare line endings) or go-smtp's (size exceeded, 552 5.3.4).
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
		s.srv.log.Warn("backend timed out during DATA", zap.String("session", s.conn.id), zap.Error(err))
		return errBackendFailed
	}
	// A read error from the client (gone mid-DATA) or a write error to the
	// backend: either way nothing was accepted.
	s.srv.log.Info("DATA aborted", zap.String("session", s.conn.id), zap.Error(err))
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
	if s.idle != nil {
		s.srv.backend.put(s.idle)
		s.idle = nil
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
	tx.stopIdleTimer()
	if tx.bc != nil {
		// MAIL/RCPT were mirrored but no DATA completed: drop that backend
		// transaction entirely rather than trust an RSET on a legacy server.
		tx.bc.quit()
		tx.bc = nil
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
	rcpts     []policy.Address
	rcptOpts  []*smtp.RcptOptions // the client's, for a replay
	rules     []string            // the rule that accepted each recipient
	refused   []refusal
	check     string       // the check that decided the last recipient (policyRcpt)
	shadow    []shadowNote // what shadow rules would have decided (bounded)
	dsnStrip  []string     // DSN parameters not forwarded (DSNMode), for the log
	bc        *backendConn
	broken    bool        // the backend leg failed: nothing more can succeed
	spooled   bool        // its backend connection was freed during DATA
	idleTimer *time.Timer // frees bc while the client pauses (holdBackend)
	lastUse   time.Time   // of bc, by this transaction
	aborted   atomic.Bool // Reset or Logout cut a running transfer short
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

func (tx *transaction) stopIdleTimer() {
	if tx.idleTimer != nil {
		tx.idleTimer.Stop()
	}
}

// breakOff drops the backend connection after a failure mid-transaction.
func (tx *transaction) breakOff() {
	if tx.bc != nil {
		tx.bc.abort()
		tx.bc = nil
	}
	tx.broken = true
}
