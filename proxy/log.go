package proxy

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tlsguard/tlsguard/policy"
)

// sessionRecord is one client connection as tlsguard accounts for it, from
// accept to close: who it is, what its sessions did (go-smtp starts a new
// Session after STARTTLS, RFC 3207 4.2, so this outlives them), its slots,
// and the one log line written when it ends. The listener creates it with
// the conn below TLS; sessions find it through Server.record.
type sessionRecord struct {
	l     *listener
	c     *conn // deadlines, reply batching, byte counts
	id    string
	ip    netip.Addr
	start time.Time

	// Guarded by Server.mu: the conn handed to go-smtp (the key of
	// Server.open), and the one shutdown writes its 421 to once go-smtp
	// serves it (the TLS conn after STARTTLS).
	handed, outer net.Conn

	mu       sync.Mutex
	sum      sessionSummary
	startTLS bool // STARTTLS was accepted and its handshake started
	upgraded bool // ... and a session inside TLS followed (counted)
}

// sessionSummary collects what the per-session log line reports.
type sessionSummary struct {
	user         string
	tlsVersion   string
	cipher       string
	sni          string
	transactions int
	accepted     int
	helo         string
	endReason    string
}

// summary runs f with the session summary locked.
func (r *sessionRecord) summary(f func(s *sessionSummary)) {
	r.mu.Lock()
	f(&r.sum)
	r.mu.Unlock()
}

// setData, timedOut and closeAfterReply are the conn's (see there).
func (r *sessionRecord) setData(on bool, idle time.Duration) { r.c.setData(on, idle) }
func (r *sessionRecord) timedOut() bool                      { return r.c.timedOut() }
func (r *sessionRecord) closeAfterReply()                    { r.c.closeAfterReply() }

// startingTLS runs when go-smtp has accepted STARTTLS and the handshake
// starts (smtp.Server.OnStartTLS): the handshake, and the EHLO after it,
// get the shorter handshake_timeout.
func (r *sessionRecord) startingTLS() {
	r.mu.Lock()
	r.startTLS = true
	r.mu.Unlock()
	r.c.startCommandWithin(r.l.srv.limits.HandshakeTimeout)
	r.l.srv.metrics.startTLS.WithLabelValues(r.l.cfg.Name).Inc()
}

// upgradedNow reports, once, that a session inside TLS followed STARTTLS.
func (r *sessionRecord) upgradedNow() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.startTLS || r.upgraded {
		return false
	}
	r.upgraded = true
	return true
}

// released runs as the conn closes, before its last reply is sent.
func (r *sessionRecord) released() {
	r.mu.Lock()
	failed := r.startTLS && !r.upgraded
	r.mu.Unlock()
	if failed {
		// STARTTLS was accepted but no TLS session followed: the
		// handshake failed (go-smtp then closes), timed out, or the
		// client left before its first command inside TLS.
		r.l.srv.metrics.handshakes.WithLabelValues(r.l.cfg.Name, "starttls", "", "failed").Inc()
	}
	r.l.release(r)
}

// closed runs once the conn is closed.
func (r *sessionRecord) closed() { r.l.closed(r) }

var _ connEnd = (*sessionRecord)(nil)

// logSession writes the one line per connection. Field names are documented
// in the README ("Log fields").
func (s *Server) logSession(listener string, r *sessionRecord) {
	r.mu.Lock()
	sum := r.sum
	r.mu.Unlock()
	in, out := r.c.byteCounts()
	if err := r.c.writeErr(); err != nil && sum.endReason == "" {
		// A client that stopped reading (conn.flush).
		sum.endReason = "write failed"
		if errors.Is(err, os.ErrDeadlineExceeded) {
			sum.endReason = "write timeout"
		}
	}
	s.log.Info("session",
		zap.String("session", r.id),
		zap.String("listener", listener),
		zap.Stringer("client_ip", r.ip),
		zap.String("helo", sum.helo),
		zap.String("tls_version", sum.tlsVersion),
		zap.String("tls_cipher", sum.cipher),
		zap.String("sni", sum.sni),
		zap.String("user", sum.user),
		zap.Int("transactions", sum.transactions),
		zap.Int("delivered", sum.accepted),
		zap.Int64("bytes_in", in),
		zap.Int64("bytes_out", out),
		zap.String("end", sum.endReason),
		zap.Duration("duration_ms", time.Since(r.start)),
	)
}

// logTransaction writes the one line per MAIL transaction: the forensic
// record of what was asked, what was decided and what the backend said.
func (s *Server) logTransaction(ss *session, tx *transaction) {
	if ce := s.log.Check(zap.InfoLevel, "transaction"); ce != nil {
		var tlsVersion, cipher, sni string
		if ss.tls != nil {
			tlsVersion, cipher, sni = tlsVersionWord(ss.tls.Version), cipherName(ss.tls.CipherSuite), ss.tls.ServerName
		}
		fields := [...]zap.Field{
			zap.String("session", ss.conn.id),
			zap.String("listener", ss.lc.Name),
			zap.Stringer("client_ip", ss.conn.ip),
			zap.Bool("tls", ss.tls != nil),
			zap.String("user", ss.user),
			zap.String("from", tx.from.String()),
			zap.Int64("size", tx.opts.Size),
			zap.Array("rcpts", addresses(tx.rcpts)),
			zap.Strings("rules", tx.rules),
			zap.Array("refused", refusals(tx.refused)),
			zap.Bool("delivered", tx.delivered),
			zap.String("result", tx.result),
			zap.Int64("bytes", tx.bytes),
			zap.Duration("duration_ms", time.Since(tx.start)),
			zap.String("tls_version", tlsVersion),
			zap.String("tls_cipher", cipher),
			zap.String("sni", sni),
		}
		n := len(fields)
		if ss.tls == nil {
			n -= 3 // no TLS fields without TLS, as before
		}
		if len(tx.dsnStrip) == 0 && len(tx.shadow) == 0 {
			ce.Write(fields[:n]...)
			return
		}
		more := fields[:n:n]
		if len(tx.dsnStrip) > 0 {
			more = append(more, zap.Strings("dsn_stripped", tx.dsnStrip))
		}
		if len(tx.shadow) > 0 {
			more = append(more, zap.Array("shadow", shadowNotes(tx.shadow)))
		}
		ce.Write(more...)
	}
}

// addresses logs recipients as strings without copying them first.
type addresses []policy.Address

func (as addresses) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	for _, a := range as {
		enc.AppendString(a.String())
	}
	return nil
}

type refusals []refusal

func (rs refusals) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	for _, r := range rs {
		enc.AppendObject(zapcore.ObjectMarshalerFunc(func(o zapcore.ObjectEncoder) error {
			o.AddString("rcpt", r.rcpt)
			o.AddString("rule", r.rule)
			o.AddString("reply", r.reply)
			o.AddString("check", r.checkWord())
			o.AddInt("before", r.before)
			return nil
		}))
	}
	return nil
}

// checkWord names the check that refused r in the log: rules, limit or
// rate_limit (the policy's), syntax, or backend (the policy accepted, the
// backend refused or failed).
func (r refusal) checkWord() string {
	switch {
	case r.rule == "syntax" && (r.check == "" || r.check == checkAccepted):
		return "syntax"
	case r.check == "" || r.check == checkAccepted:
		return "backend"
	}
	return r.check
}

// shadowNotes logs, per recipient, what rules in mode: shadow would have
// decided: [{rcpt, rule, would, reply}].
type shadowNotes []shadowNote

func (ns shadowNotes) MarshalLogArray(enc zapcore.ArrayEncoder) error {
	for _, n := range ns {
		for _, sh := range n.s {
			enc.AppendObject(zapcore.ObjectMarshalerFunc(func(o zapcore.ObjectEncoder) error {
				o.AddString("rcpt", n.rcpt)
				o.AddString("rule", sh.Rule)
				o.AddString("would", sh.Would.String())
				o.AddString("reply", sh.Reply.String())
				return nil
			}))
		}
	}
	return nil
}
