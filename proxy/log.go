package proxy

import (
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tlsguard/tlsguard/policy"
)

// logSession writes the one line per connection. Field names are documented
// in the README ("Log fields").
func (s *Server) logSession(listener string, c *conn) {
	c.mu.Lock()
	sum := c.sessionFields
	in, out := c.bytesIn, c.bytesOut
	c.mu.Unlock()
	s.log.Info("session",
		zap.String("session", c.id),
		zap.String("listener", listener),
		zap.Stringer("client_ip", c.ip),
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
		zap.Duration("duration_ms", time.Since(c.start)),
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
