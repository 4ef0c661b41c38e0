package policy

// ruleAction is what a rule does when it matches.
type ruleAction uint8

const (
	actAccept ruleAction = iota + 1
	actReject
	actTempFail
	actRequireAuth
)

var actionNames = map[string]ruleAction{
	"accept":       actAccept,
	"reject":       actReject,
	"tempfail":     actTempFail,
	"require_auth": actRequireAuth,
}

func (a ruleAction) String() string {
	for n, v := range actionNames {
		if v == a {
			return n
		}
	}
	return "?"
}

// grants reports whether the action lets mail through.
func (a ruleAction) grants() bool { return a == actAccept || a == actRequireAuth }

// rule is one compiled entry of rules (or a built-in rule).
type rule struct {
	name   string
	source string // file:line
	line   int
	index  int // in rules; -1 for built-ins
	sel    selector
	from   *patternSet // nil: any sender
	to     *patternSet // nil: any recipient
	local  tri
	action ruleAction
	reply  Reply // for reject, tempfail and require_auth
	conds  []cond
	// shadow (mode: shadow): evaluated where it stands, but the next rule
	// decides; what it would have decided is reported in Decision.Shadow.
	shadow bool
}

func (r *rule) compile() {
	r.conds = r.sel.conds()
	if r.local != triAny {
		r.conds = append(r.conds, cond{kind: condLocal, want: r.local == triTrue})
	}
	if r.from != nil {
		r.conds = append(r.conds, cond{kind: condSenders, pats: r.from, grant: r.action.grants()})
	}
	if r.to != nil {
		r.conds = append(r.conds, cond{kind: condRecipients, pats: r.to, grant: r.action.grants()})
	}
}

// decide is the Decision of a rule that matched.
func (r *rule) decide(ev *evalCtx) Decision {
	d := Decision{Rule: r.name, Source: r.source}
	switch r.action {
	case actAccept:
		d.Action, d.Reply = Accept, replyRecipientOK
	case actReject:
		d.Action, d.Reply = Reject, r.reply
	case actTempFail:
		d.Action, d.Reply = TempFail, r.reply
	case actRequireAuth:
		if ev.s.User != "" {
			d.Action, d.Reply = Accept, replyRecipientOK
		} else {
			d.Action, d.Reply = Reject, r.reply
		}
	}
	return d
}

// shadows reports whether r (earlier) matches every envelope that s
// (later) matches, so s can never decide anything.
func (r *rule) shadows(s *rule) bool {
	if !r.sel.covers(&s.sel) {
		return false
	}
	if r.local != triAny && r.local != s.local {
		return false
	}
	// A granting rule's patterns skip tricky addresses that a refusing
	// rule's patterns still match, and local_recipient: true skips them too.
	tricky := r.action.grants() && !s.action.grants()
	if r.from != nil {
		if s.from == nil || !r.from.covers(s.from) || tricky {
			return false
		}
	}
	if r.to != nil {
		if s.to == nil || !r.to.covers(s.to) || tricky {
			return false
		}
	}
	return true
}
