package proxy

import (
	"io"
	"time"

	"github.com/emersion/go-smtp"
	"go.uber.org/zap"

	"github.com/tlsguard/tlsguard/policy"
)

// The policy's checks at MAIL and RCPT, beyond the relay rules: sender
// ownership, the declared size, per-message recipient limits and rate
// limits. Session.Mail and Session.Rcpt call these; everything they decide
// comes from package policy as a Decision carrying its reply and rule.

// RateCounters returns the Server's rate-limit counters. They belong to the
// Server, not to a Policy, so they survive policy reloads.
func (s *Server) RateCounters() *policy.Counters { return s.counters }

// policyMail makes the MAIL FROM checks of pol: sender ownership (553
// 5.7.1), the SIZE= the client declared against the session's limit (552
// 5.3.4), then the message rate limits (450 4.7.1), which count this
// message if it passes. nil means go on.
func (s *session) policyMail(pol *policy.Policy, from policy.Address, opts *smtp.MailOptions) error {
	f := s.facts()
	d := pol.CheckMail(f, from, opts.Size)
	if d.Action == policy.Accept {
		d = s.srv.RateCounters().Message(pol, f, time.Now())
	}
	if d.Action == policy.Accept {
		return nil
	}
	s.srv.countDecision(s.lc.Name, d)
	s.srv.log.Info("MAIL refused by policy",
		zap.String("session", s.conn.id),
		zap.String("listener", s.lc.Name),
		zap.Stringer("client_ip", s.conn.ip),
		zap.String("user", s.user),
		zap.String("from", from.String()),
		zap.String("rule", d.Rule),
		zap.String("rule_source", d.Source),
		zap.String("reply", d.Reply.String()))
	return policyReply(d.Reply)
}

// policyRcpt decides one syntactically valid recipient: the rules of the
// transaction's policy, then its per-message recipient limit (452 4.5.3),
// then the recipient rate limits (450 4.7.1), which count it if it passes.
//
// It notes on tx, for the transaction log, which check decided (so that
// "policy replay" can tell the rules' refusals from the others) and what
// rules in mode: shadow would have decided.
func (s *session) policyRcpt(tx *transaction, rcpt policy.Address) policy.Decision {
	d, check := s.checkRcpt(tx, rcpt)
	tx.check = check
	if len(d.Shadow) > 0 && len(tx.shadow) < 20 {
		tx.shadow = append(tx.shadow, shadowNote{rcpt: rcpt.String(), s: d.Shadow})
	}
	return d
}

// Which check decided a recipient, as the transaction log names it.
const (
	checkRules     = "rules"
	checkLimit     = "limit"
	checkRateLimit = "rate_limit"
	checkAccepted  = "accepted"
)

func (s *session) checkRcpt(tx *transaction, rcpt policy.Address) (policy.Decision, string) {
	f := s.facts()
	d := tx.pol.CheckRecipient(f, tx.from, rcpt)
	if d.Action != policy.Accept {
		return d, checkRules
	}
	if ld := tx.pol.CheckRecipientCount(f, len(tx.rcpts)); ld.Action != policy.Accept {
		ld.Shadow = d.Shadow
		return ld, checkLimit
	}
	if rd := s.srv.RateCounters().Recipient(tx.pol, f, time.Now()); rd.Action != policy.Accept {
		rd.Shadow = d.Shadow
		return rd, checkRateLimit
	}
	return d, checkAccepted
}

// shadowNote is what rules in mode: shadow would have decided for rcpt.
type shadowNote struct {
	rcpt string
	s    []policy.Shadow
}

// policyDataLimit wraps the DATA reader of tx so that a message larger than
// the session's policy limit (limits: max_message_size) fails with 552
// 5.3.4 as soon as it passes the limit. A client that declared SIZE= was
// already judged at MAIL; this catches the ones that did not or lied.
func (s *session) policyDataLimit(tx *transaction, r io.Reader) io.Reader {
	l := tx.pol.SessionLimits(s.facts())
	if l.MaxMessageBytes <= 0 {
		return r
	}
	d := tx.pol.CheckMessageSize(s.facts(), l.MaxMessageBytes+1)
	return &limitReader{r: r, left: l.MaxMessageBytes, err: policyReply(d.Reply)}
}

// limitReader returns err once more than left bytes have been read.
type limitReader struct {
	r    io.Reader
	left int64
	err  *smtp.SMTPError
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left < 0 {
		return 0, l.err
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		return n, l.err
	}
	return n, err
}
