package policy

import "fmt"

// limitEntry is one entry of limits.
type limitEntry struct {
	name, source string
	sel          selector
	conds        []cond
	maxRcpts     int   // 0: not set
	maxSize      int64 // 0: not set
}

// Limits are the per-message limits that apply to one session. Zero means
// the policy sets none (the proxy's global limits still apply).
type Limits struct {
	MaxRecipients    int
	RecipientsRule   string // name of the limits entry that set it
	RecipientsSource string // its file:line
	MaxMessageBytes  int64
	SizeRule         string
	SizeSource       string
}

// SessionLimits returns the limits for a session: every limits entry whose
// conditions match applies, and where several set the same limit the
// smallest wins, so a limit can only tighten.
func (p *Policy) SessionLimits(s Session) Limits {
	var l Limits
	if len(p.limits) == 0 {
		return l
	}
	ev := p.newEval(s, Address{}, Address{})
	for _, e := range p.limits {
		if !matchConds(e.conds, &ev) {
			continue
		}
		if e.maxRcpts > 0 && (l.MaxRecipients == 0 || e.maxRcpts < l.MaxRecipients) {
			l.MaxRecipients, l.RecipientsRule, l.RecipientsSource = e.maxRcpts, e.name, e.source
		}
		if e.maxSize > 0 && (l.MaxMessageBytes == 0 || e.maxSize < l.MaxMessageBytes) {
			l.MaxMessageBytes, l.SizeRule, l.SizeSource = e.maxSize, e.name, e.source
		}
	}
	return l
}

// CheckRecipientCount decides whether one more recipient may be added to a
// message that already has accepted recipients: "452 4.5.3" past the limit
// (RFC 5321 section 4.5.3.1.10: the client sends the rest in another
// transaction).
func (p *Policy) CheckRecipientCount(s Session, accepted int) Decision {
	l := p.SessionLimits(s)
	if l.MaxRecipients > 0 && accepted >= l.MaxRecipients {
		r := replyTooManyRcpts
		r.Text = fmt.Sprintf("Too many recipients, at most %d per message", l.MaxRecipients)
		return Decision{Action: TempFail, Reply: r, Rule: l.RecipientsRule, Source: l.RecipientsSource}
	}
	return Decision{Action: Accept, Reply: replyRecipientOK, Rule: RuleNoLimit, Source: p.file}
}

// CheckMessageSize decides a message of size bytes (declared with SIZE= or
// counted during DATA): "552 5.3.4" over the limit. A size of 0 (not
// declared) is accepted.
func (p *Policy) CheckMessageSize(s Session, size int64) Decision {
	l := p.SessionLimits(s)
	if l.MaxMessageBytes > 0 && size > l.MaxMessageBytes {
		return Decision{Action: Reject, Reply: sizeReply(l.MaxMessageBytes), Rule: l.SizeRule, Source: l.SizeSource}
	}
	return Decision{Action: Accept, Reply: replySenderOK, Rule: RuleNoLimit, Source: p.file}
}

// sizeReply is the reply for a message over a limit of max bytes.
func sizeReply(max int64) Reply {
	r := replyTooBig
	r.Text = fmt.Sprintf("Message too large, at most %d bytes", max)
	return r
}
