package replay

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteText prints the report for a person: the counts, the candidate's
// rules, then the changed decisions by rule and by envelope, newest first
// (at most show groups of each; 0: all).
func (rep *Report) WriteText(w io.Writer, show int) {
	fmt.Fprintf(w, "candidate: %s\n", rep.Candidate)
	if rep.Against == "log" {
		fmt.Fprintln(w, "against:   the decisions recorded in the log")
	} else {
		fmt.Fprintf(w, "against:   %s\n", rep.Against)
	}
	fmt.Fprintf(w, "read:      %d lines, %d transactions, %d recipient decisions", rep.Lines, rep.Transactions, rep.Decisions)
	if rep.SkippedOld > 0 {
		fmt.Fprintf(w, " (%d older transactions skipped)", rep.SkippedOld)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	for _, o := range []string{Unchanged, NewlyRefused, NewlyAccepted, RefusedDifferently} {
		fmt.Fprintf(tw, "%s\t%d\t\n", strings.ReplaceAll(o, "_", " "), rep.Outcomes[o])
	}
	tw.Flush()
	fmt.Fprintf(w, "rate limits: not simulated (%d recipients refused by a rate limit not replayed; accepted ones judged without rate limits)\n", rep.NotSimulated)
	if rep.SyntaxRefusals > 0 || rep.Unrecorded > 0 {
		fmt.Fprintf(w, "not policy decisions: %d syntax refusals; not replayable: %d refusals logged without their check\n", rep.SyntaxRefusals, rep.Unrecorded)
	}

	fmt.Fprintln(w, "\ncandidate decisions per rule:")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  rule\taccept\treject\ttempfail")
	for _, rc := range rep.Rules {
		fmt.Fprintf(tw, "  %s\t%d\t%d\t%d\n", rc.Rule, rc.Accept, rc.Reject, rc.TempFail)
	}
	tw.Flush()
	if len(rep.Shadow) > 0 {
		fmt.Fprintln(w, "\nshadow rules (would have decided otherwise):")
		for _, sc := range rep.Shadow {
			fmt.Fprintf(w, "  %s would %s: %d\n", sc.Rule, sc.Would, sc.Count)
		}
	}

	groups := func(title string, gs []Group, other int64, key func(Group) string) {
		if len(gs) == 0 {
			return
		}
		fmt.Fprintf(w, "\nchanged decisions by %s (newest first):\n", title)
		for i, g := range gs {
			if show > 0 && i == show {
				fmt.Fprintf(w, "  ... %d more groups (--json lists all)\n", len(gs)-show)
				break
			}
			e := g.Example
			fmt.Fprintf(w, "  %-19s %6d  %s\n", strings.ReplaceAll(g.Outcome, "_", " "), g.Count, key(g))
			user := e.User
			if user == "" {
				user = "-"
			}
			fmt.Fprintf(w, "      e.g. %s %s listener %s tls %t user %s ip %s <%s> -> <%s>\n", e.Time, e.Where, e.Listener, e.TLS, user, e.ClientIP, e.From, e.Rcpt)
			fmt.Fprintf(w, "           was %s\n           now %s\n", e.Before, e.After)
		}
		if other > 0 {
			fmt.Fprintf(w, "  other (beyond the group cap): %d\n", other)
		}
	}
	groups("rule", rep.ByRule, rep.OtherByRule, func(g Group) string { return "rule " + g.Rule })
	groups("envelope", rep.ByEnvelope, rep.OtherByEnvelope, func(g Group) string {
		return fmt.Sprintf("listener %s, %s, from %s, to %s", g.Listener, g.Who, g.SenderDomain, g.RecipientDomain)
	})

	if rep.BadLines > 0 {
		fmt.Fprintf(w, "\nunparsable lines: %d\n", rep.BadLines)
		for _, b := range rep.BadLinesSeen {
			fmt.Fprintf(w, "  %s: %s\n", b.Where, b.Reason)
		}
		if n := rep.BadLines - int64(len(rep.BadLinesSeen)); n > 0 {
			fmt.Fprintf(w, "  ... and %d more\n", n)
		}
	}
	if rep.Changed() {
		fmt.Fprintln(w, "\nresult: decisions change")
	} else {
		fmt.Fprintln(w, "\nresult: no decision changes")
	}
}
