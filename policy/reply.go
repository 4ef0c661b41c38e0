package policy

import "fmt"

// Reply is an SMTP reply: a three-digit code, an RFC 3463 enhanced status
// code and one line of text. The proxy sends it as "Code E.E.E Text".
type Reply struct {
	Code     int
	Enhanced [3]int
	Text     string
}

// String formats the reply as it appears on the wire, without CRLF,
// e.g. "550 5.7.1 Relaying denied. Authentication required.".
func (r Reply) String() string {
	return fmt.Sprintf("%d %d.%d.%d %s", r.Code, r.Enhanced[0], r.Enhanced[1], r.Enhanced[2], r.Text)
}

// Replies this package decides. Codes are fixed by the behaviour contract in
// DESIGN.md; only texts may become configurable later.
var (
	replyRecipientOK = Reply{250, [3]int{2, 1, 5}, "OK"}
	replyRelayDenied = Reply{550, [3]int{5, 7, 1}, "Relaying denied. Authentication required."}
	replyBadSyntax   = Reply{553, [3]int{5, 1, 3}, "Bad address syntax"}
	replyNeedUTF8    = Reply{553, [3]int{5, 6, 7}, "Non-ASCII address requires SMTPUTF8"}
)

// Action is what a Decision tells the proxy to do. The zero value is not a
// valid action, so a Decision that was never filled in is never an Accept.
type Action int

// Actions. New ones (RequireAuth for the rules issue) are added at the end so
// existing values keep their meaning.
const (
	// Accept lets the command proceed (RCPT is forwarded to the backend).
	Accept Action = iota + 1
	// Reject refuses the command permanently with the Decision's 5xx reply.
	Reject
	// TempFail refuses the command temporarily with the Decision's 4xx reply.
	TempFail
)

// String returns the lower-case name used in logs and policy files.
func (a Action) String() string {
	switch a {
	case Accept:
		return "accept"
	case Reject:
		return "reject"
	case TempFail:
		return "tempfail"
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// Decision is the outcome of one check: the action, the exact SMTP reply to
// send, and the name of the rule that decided (for logs, metrics and
// "tlsguard policy explain"). For an Accept of a RCPT the proxy may send the
// backend's own reply instead of Reply, which is then only the default.
type Decision struct {
	Action Action
	Reply  Reply
	Rule   string
}

// Rule names reported in Decision.Rule.
const (
	RuleLocalDomains    = "local_domains"
	RuleAuthenticated   = "authenticated"
	RuleTrustedNetworks = "trusted_networks"
	RuleDefault         = "default"
)
