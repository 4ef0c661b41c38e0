package policy

import "fmt"

// Step is one line of an explanation: a rule or entry that was looked at,
// whether it matched, and why not (or what it decided).
type Step struct {
	// Stage is "mail" (sender_ownership, size), "rcpt" (rules) or
	// "limit" (recipients per message).
	Stage   string
	Rule    string
	Source  string
	Matched bool
	// Decided marks the step that made the final decision.
	Decided bool
	// Shadow marks a rule in mode: shadow: it matched and Note says what
	// it would have decided, but it did not decide.
	Shadow bool
	Note   string
}

// Explanation is Evaluate's decision with the steps that led to it.
type Explanation struct {
	Decision Decision
	Steps    []Step
}

// Explain evaluates like Evaluate and records, for each rule tried, why it
// did not match, up to the one that decided. The conditions are the same
// objects Evaluate runs, so the story is the decision.
func (p *Policy) Explain(s Session, env Envelope, rcpt Address) Explanation {
	x := p.explain(s, env, rcpt)
	for i := len(x.Steps) - 1; i >= 0; i-- {
		if st := &x.Steps[i]; st.Matched && !st.Shadow && st.Rule == x.Decision.Rule && st.Source == x.Decision.Source {
			st.Decided = true
			break
		}
	}
	return x
}

func (p *Policy) explain(s Session, env Envelope, rcpt Address) Explanation {
	x := Explanation{Decision: p.Evaluate(s, env, rcpt)}
	add := func(stage, rule, source string, matched bool, format string, args ...any) {
		x.Steps = append(x.Steps, Step{Stage: stage, Rule: rule, Source: source, Matched: matched, Note: fmt.Sprintf(format, args...)})
	}

	// MAIL FROM: sender ownership.
	ev := p.newEval(s, env.From, rcpt)
	switch {
	case s.User == "":
		add("mail", RuleNoOwnership, p.file, false, "not checked: the client has not logged in")
	case len(p.owners) == 0:
		add("mail", RuleNoOwnership, p.file, false, "not checked: the policy has no sender_ownership")
	default:
		applied := false
		for _, o := range p.owners {
			if why := whyConds(o.conds, &ev); why != "" {
				add("mail", o.name, o.source, false, "does not apply: %s", why)
				continue
			}
			applied = true
			if o.may.match(env.From, ev.fromLower, ev.userLower, true) {
				add("mail", o.name, o.source, true, "sender <%s> is allowed by may_send_as [%s]", env.From, o.may)
				break
			}
			add("mail", o.name, o.source, true, "applies, but sender <%s> matches none of may_send_as [%s]%s", env.From, o.may, trickNote(env.From, true))
		}
		if !applied {
			add("mail", RuleNoOwnership, p.file, false, "no entry applies to user %q: any sender allowed", s.User)
		}
	}
	if env.Size > 0 {
		l := p.SessionLimits(s)
		if l.MaxMessageBytes > 0 {
			add("mail", l.SizeRule, l.SizeSource, env.Size > l.MaxMessageBytes, "declared size %d, limit %d bytes", env.Size, l.MaxMessageBytes)
		}
	}
	if p.CheckMail(s, env.From, env.Size).Action != Accept {
		return x
	}

	// RCPT TO: rules, first match wins.
	decided := false
	for _, r := range p.rules {
		if why := whyConds(r.conds, &ev); why != "" {
			add("rcpt", r.name, r.source, false, "%s", why)
			continue
		}
		d := r.decide(&ev)
		note := fmt.Sprintf("matched: %s", r.action)
		if r.action == actRequireAuth {
			if s.User != "" {
				note += " (the client is logged in as " + s.User + ")"
			} else {
				note += " (the client has not logged in)"
			}
		}
		if r.shadow {
			add("rcpt", r.name, r.source, true, "%s -> %s, but mode: shadow: not enforced, the rules below decide", note, d.Reply)
			x.Steps[len(x.Steps)-1].Shadow = true
			continue
		}
		add("rcpt", r.name, r.source, true, "%s -> %s", note, d.Reply)
		decided = true
		break
	}
	if !decided {
		add("rcpt", RuleDefault, p.file, true, "no rule matched -> %s", replyRelayDenied)
	}
	if p.CheckRecipient(s, env.From, rcpt).Action != Accept {
		return x
	}
	if l := p.SessionLimits(s); l.MaxRecipients > 0 {
		over := env.Recipients >= l.MaxRecipients
		note := fmt.Sprintf("recipient %d of at most %d per message", env.Recipients+1, l.MaxRecipients)
		if over {
			note += " -> " + x.Decision.Reply.String()
		}
		add("limit", l.RecipientsRule, l.RecipientsSource, over, "%s", note)
	}
	return x
}
