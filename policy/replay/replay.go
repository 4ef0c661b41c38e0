// Package replay re-evaluates the recipient decisions recorded in
// tlsguard's transaction log under a candidate policy, so that a policy
// change can be judged against last week's real traffic before it is
// deployed ("tlsguard policy replay").
//
// The log is read as a stream, line by line; memory is bounded by the
// number of groups kept (Options.MaxGroups), not by the size of the log.
// Rate limits are not simulated: they depend on traffic that a replay
// cannot reproduce faithfully (other instances, restarts, reloads), so a
// recipient a rate limit refused is counted as "not simulated", and an
// accepted one is judged without them.
package replay

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/tlsguard/tlsguard/policy"
)

// Outcomes of one re-evaluated decision.
const (
	Unchanged          = "unchanged"
	NewlyRefused       = "newly_refused"
	NewlyAccepted      = "newly_accepted"
	RefusedDifferently = "refused_differently"
)

// Options configure a Replayer.
type Options struct {
	// Candidate is the policy to judge; required.
	Candidate *policy.Policy
	// Current, when set, gives the decisions to compare with: each
	// recipient is evaluated under both policies. Nil compares with the
	// decisions recorded in the log (the policy in force at the time).
	Current *policy.Policy
	// Since skips transactions logged before it (zero: none skipped).
	Since time.Time
	// MaxGroups caps each group table; changes beyond it are counted in
	// an "other" group, so memory stays bounded whatever the log holds.
	// Default 1000.
	MaxGroups int
	// MaxBadLines caps how many unparsable lines are listed with their
	// file:line (all are counted). Default 20.
	MaxBadLines int
	// MaxLineBytes is the longest line read; a longer one is unparsable.
	// Default 1 MiB.
	MaxLineBytes int
}

// Replayer accumulates a Report over one or more logs.
type Replayer struct {
	opt     Options
	rep     Report
	byRule  groupTable
	byEnv   groupTable
	perRule map[string]*RuleCount
	shadow  map[string]*ShadowCount
	lineBuf []byte
}

// Report is the outcome of a replay. Its JSON form is what --json prints.
type Report struct {
	Candidate string `json:"candidate"`
	// Against is the --current policy file, or "log" when the recorded
	// decisions are the reference.
	Against string   `json:"against"`
	Files   []string `json:"files"`

	Lines        int64 `json:"lines"`
	Transactions int64 `json:"transactions"`
	// SkippedOld counts transactions before Since.
	SkippedOld int64 `json:"skipped_before_since"`
	Decisions  int64 `json:"decisions"`

	Outcomes map[string]int64 `json:"outcomes"`
	// NotSimulated counts recipients a rate limit refused: rate limits
	// are not simulated.
	NotSimulated int64 `json:"rate_limited_not_simulated"`
	// SyntaxRefusals counts recipients refused for their syntax, before
	// any policy check: not policy decisions.
	SyntaxRefusals int64 `json:"syntax_refusals"`
	// Unrecorded counts refused recipients whose log entry lacks the
	// check that refused them (logs of an older tlsguard): not replayed.
	Unrecorded int64 `json:"unrecorded"`

	// Rules counts the candidate's decisions per rule.
	Rules []RuleCount `json:"rules"`
	// Shadow counts, per rule in mode: shadow of the candidate, the
	// decisions it would have made differently.
	Shadow []ShadowCount `json:"shadow,omitempty"`

	ByRule     []Group `json:"changes_by_rule"`
	ByEnvelope []Group `json:"changes_by_envelope"`
	// OtherByRule and OtherByEnvelope count changes beyond MaxGroups.
	OtherByRule     int64 `json:"other_by_rule,omitempty"`
	OtherByEnvelope int64 `json:"other_by_envelope,omitempty"`

	BadLines     int64     `json:"bad_lines"`
	BadLinesSeen []BadLine `json:"bad_line_list,omitempty"`
}

// Changed reports whether any decision differs.
func (r *Report) Changed() bool {
	return r.Outcomes[NewlyRefused]+r.Outcomes[NewlyAccepted]+r.Outcomes[RefusedDifferently] > 0
}

// RuleCount is how often a rule of the candidate decided, by action.
type RuleCount struct {
	Rule     string `json:"rule"`
	Accept   int64  `json:"accept"`
	Reject   int64  `json:"reject"`
	TempFail int64  `json:"tempfail"`
}

// ShadowCount is how often a shadow rule would have decided otherwise.
type ShadowCount struct {
	Rule  string `json:"rule"`
	Would string `json:"would"`
	Count int64  `json:"count"`
}

// Group is a set of changed decisions with one key, its size and its
// newest example.
type Group struct {
	Outcome string `json:"outcome"`
	// Rule is "old -> new" (by-rule groups).
	Rule string `json:"rule,omitempty"`
	// Listener, Who (user NAME, or net PREFIX for a client not logged in),
	// SenderDomain and RecipientDomain key the by-envelope groups.
	Listener        string  `json:"listener,omitempty"`
	Who             string  `json:"who,omitempty"`
	SenderDomain    string  `json:"sender_domain,omitempty"`
	RecipientDomain string  `json:"recipient_domain,omitempty"`
	Count           int64   `json:"count"`
	Example         Example `json:"example"`
}

// Example is one changed decision, as logged and as replayed.
type Example struct {
	Time     string `json:"ts"`
	Where    string `json:"where"` // file:line
	Listener string `json:"listener"`
	TLS      bool   `json:"tls"`
	User     string `json:"user,omitempty"`
	ClientIP string `json:"client_ip"`
	From     string `json:"from"`
	Rcpt     string `json:"rcpt"`
	Before   string `json:"before"`
	After    string `json:"after"`
	ts       time.Time
}

// BadLine is a line that could not be replayed, and why.
type BadLine struct {
	Where  string `json:"where"`
	Reason string `json:"reason"`
}

// New returns a Replayer; o.Candidate must be set.
func New(o Options) *Replayer {
	if o.MaxGroups <= 0 {
		o.MaxGroups = 1000
	}
	if o.MaxBadLines <= 0 {
		o.MaxBadLines = 20
	}
	if o.MaxLineBytes <= 0 {
		o.MaxLineBytes = 1 << 20
	}
	r := &Replayer{opt: o, perRule: map[string]*RuleCount{}, shadow: map[string]*ShadowCount{}}
	r.byRule = groupTable{max: o.MaxGroups, m: map[string]*Group{}}
	r.byEnv = groupTable{max: o.MaxGroups, m: map[string]*Group{}}
	r.rep.Candidate = o.Candidate.File()
	r.rep.Against = "log"
	if o.Current != nil {
		r.rep.Against = o.Current.File()
	}
	r.rep.Outcomes = map[string]int64{Unchanged: 0, NewlyRefused: 0, NewlyAccepted: 0, RefusedDifferently: 0}
	return r
}

// Read replays one log; name is used in file:line reports. A gzip stream
// is recognised by its magic bytes. Lines that do not parse are counted
// and listed, never fatal; the error is only for reading (I/O, a broken
// gzip stream).
func (r *Replayer) Read(name string, in io.Reader) error {
	r.rep.Files = append(r.rep.Files, name)
	br := bufio.NewReaderSize(in, 64<<10)
	if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		defer zr.Close()
		br = bufio.NewReaderSize(zr, 64<<10)
	}
	for n := 1; ; n++ {
		line, tooLong, err := r.readLine(br)
		if len(line) > 0 || tooLong {
			r.rep.Lines++
			switch {
			case tooLong:
				r.bad(name, n, fmt.Sprintf("line longer than %d bytes", r.opt.MaxLineBytes))
			default:
				if why := r.line(name, n, line); why != "" {
					r.bad(name, n, why)
				}
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s:%d: %w", name, n, err)
		}
	}
}

// readLine returns the next line without its end; a line over the limit
// is skipped to its end and reported as tooLong.
func (r *Replayer) readLine(br *bufio.Reader) (line []byte, tooLong bool, err error) {
	r.lineBuf = r.lineBuf[:0]
	for {
		chunk, err := br.ReadSlice('\n')
		if !tooLong {
			if len(r.lineBuf)+len(chunk) > r.opt.MaxLineBytes+1 {
				tooLong = true
				r.lineBuf = r.lineBuf[:0]
			} else {
				r.lineBuf = append(r.lineBuf, chunk...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if tooLong {
			return nil, true, err
		}
		return bytes.TrimRight(r.lineBuf, "\r\n"), false, err
	}
}

func (r *Replayer) bad(name string, n int, why string) {
	r.rep.BadLines++
	if len(r.rep.BadLinesSeen) < r.opt.MaxBadLines {
		r.rep.BadLinesSeen = append(r.rep.BadLinesSeen, BadLine{Where: fmt.Sprintf("%s:%d", name, n), Reason: why})
	}
}

// logLine is the part of a log line replay reads (README, "Log fields").
type logLine struct {
	Msg      string   `json:"msg"`
	TS       string   `json:"ts"`
	Listener string   `json:"listener"`
	ClientIP string   `json:"client_ip"`
	TLS      bool     `json:"tls"`
	User     string   `json:"user"`
	From     *string  `json:"from"`
	Size     int64    `json:"size"`
	Rcpts    []string `json:"rcpts"`
	Rules    []string `json:"rules"`
	Refused  []struct {
		Rcpt   string `json:"rcpt"`
		Rule   string `json:"rule"`
		Reply  string `json:"reply"`
		Check  string `json:"check"`
		Before int    `json:"before"`
	} `json:"refused"`
}

// recorded is one decision as the log tells it.
type recorded struct {
	rcpt   string
	before int
	accept bool
	code   int
	rule   string
	reply  string
}

// line replays one log line; it returns why it could not, or "".
func (r *Replayer) line(name string, n int, b []byte) string {
	// Cheap filter first: most lines of a busy log are not transactions,
	// and only a line that is not JSON at all must be reported.
	if !bytes.Contains(b, []byte(`"transaction"`)) {
		if !json.Valid(b) {
			return "not a JSON log line"
		}
		return ""
	}
	var l logLine
	if err := json.Unmarshal(b, &l); err != nil {
		return "not a JSON log line: " + err.Error()
	}
	if l.Msg != "transaction" {
		return ""
	}
	ts, err := parseTime(l.TS)
	if err != nil {
		return "ts: " + err.Error()
	}
	if !r.opt.Since.IsZero() && ts.Before(r.opt.Since) {
		r.rep.SkippedOld++
		return ""
	}
	if l.Listener == "" || l.From == nil {
		return "transaction without listener or from"
	}
	ip, err := netip.ParseAddr(l.ClientIP)
	if err != nil {
		return "client_ip: " + err.Error()
	}
	from, err := parseAddr(*l.From)
	if err != nil {
		return fmt.Sprintf("from %q: %v", *l.From, err)
	}
	if len(l.Rules) != len(l.Rcpts) {
		return "rcpts and rules differ in length"
	}
	r.rep.Transactions++
	s := policy.Session{Listener: l.Listener, TLS: l.TLS, User: l.User, ClientIP: ip}
	recs := make([]recorded, 0, len(l.Rcpts)+len(l.Refused))
	for i, rc := range l.Rcpts {
		recs = append(recs, recorded{rcpt: rc, before: i, accept: true, code: 250, rule: l.Rules[i]})
	}
	for _, f := range l.Refused {
		switch f.Check {
		case "syntax":
			r.rep.SyntaxRefusals++
			continue
		case "rate_limit":
			r.rep.NotSimulated++
			continue
		case "":
			r.rep.Unrecorded++
			continue
		case "backend":
			// The policy accepted; the backend refused or failed.
			rule := f.Rule
			if rule == "backend" {
				rule = "?"
			}
			recs = append(recs, recorded{rcpt: f.Rcpt, before: f.Before, accept: true, code: 250, rule: rule})
		default:
			code, _, _ := strings.Cut(f.Reply, " ")
			c := 0
			fmt.Sscan(code, &c)
			recs = append(recs, recorded{rcpt: f.Rcpt, before: f.Before, code: c, rule: f.Rule, reply: f.Reply})
		}
	}
	for _, rec := range recs {
		rcpt, err := parseAddr(rec.rcpt)
		if err != nil || rcpt.IsNull() {
			r.bad(name, n, fmt.Sprintf("rcpt %q: not an address", rec.rcpt))
			continue
		}
		env := policy.Envelope{From: from, Size: l.Size, Recipients: rec.before}
		if r.opt.Current != nil {
			d := r.opt.Current.Evaluate(s, env, rcpt)
			rec.accept, rec.code, rec.rule, rec.reply = d.Action == policy.Accept, d.Reply.Code, d.Rule, d.Reply.String()
		}
		d := r.opt.Candidate.Evaluate(s, env, rcpt)
		r.judge(name, n, ts, &l, s, from, rcpt, rec, d)
	}
	return ""
}

func (r *Replayer) judge(name string, n int, ts time.Time, l *logLine, s policy.Session, from, rcpt policy.Address, rec recorded, d policy.Decision) {
	r.rep.Decisions++
	rc := r.perRule[d.Rule]
	if rc == nil {
		rc = &RuleCount{Rule: d.Rule}
		r.perRule[d.Rule] = rc
	}
	switch d.Action {
	case policy.Accept:
		rc.Accept++
	case policy.Reject:
		rc.Reject++
	case policy.TempFail:
		rc.TempFail++
	}
	for _, sh := range d.Shadow {
		k := sh.Rule + "\x00" + sh.Would.String()
		sc := r.shadow[k]
		if sc == nil {
			sc = &ShadowCount{Rule: sh.Rule, Would: sh.Would.String()}
			r.shadow[k] = sc
		}
		sc.Count++
	}
	accept := d.Action == policy.Accept
	var outcome string
	switch {
	case accept && rec.accept, !accept && !rec.accept && d.Reply.Code == rec.code:
		outcome = Unchanged
	case !accept && rec.accept:
		outcome = NewlyRefused
	case accept && !rec.accept:
		outcome = NewlyAccepted
	default:
		outcome = RefusedDifferently
	}
	r.rep.Outcomes[outcome]++
	if outcome == Unchanged {
		return
	}
	before := "accept (rule " + rec.rule + ")"
	if !rec.accept {
		before = rec.reply + " (rule " + rec.rule + ")"
	}
	ex := Example{
		Time: l.TS, Where: fmt.Sprintf("%s:%d", name, n), Listener: s.Listener, TLS: s.TLS, User: s.User,
		ClientIP: l.ClientIP, From: from.String(), Rcpt: rcpt.String(), Before: before,
		After: fmt.Sprintf("%s %s (rule %s)", d.Action, d.Reply, d.Rule), ts: ts,
	}
	if accept {
		ex.After = "accept (rule " + d.Rule + ")"
	}
	ruleKey := rec.rule + " -> " + d.Rule
	if !r.byRule.add(outcome+"\x00"+ruleKey, ex, func(g *Group) { g.Rule = ruleKey }) {
		r.rep.OtherByRule++
	}
	who := "user " + s.User
	if s.User == "" {
		who = "net " + network(s.ClientIP)
	}
	sd, rd := domainOf(from), domainOf(rcpt)
	k := strings.Join([]string{outcome, s.Listener, who, sd, rd}, "\x00")
	if !r.byEnv.add(k, ex, func(g *Group) { g.Listener, g.Who, g.SenderDomain, g.RecipientDomain = s.Listener, who, sd, rd }) {
		r.rep.OtherByEnvelope++
	}
}

// groupTable is a bounded map of groups.
type groupTable struct {
	max int
	m   map[string]*Group
}

// add counts ex in the group k (creating it with init while under max);
// false when the table is full and k is not in it.
func (t *groupTable) add(k string, ex Example, init func(*Group)) bool {
	g := t.m[k]
	if g == nil {
		if len(t.m) >= t.max {
			return false
		}
		outcome, _, _ := strings.Cut(k, "\x00")
		g = &Group{Outcome: outcome, Example: ex}
		init(g)
		t.m[k] = g
	}
	g.Count++
	if !ex.ts.Before(g.Example.ts) {
		g.Example = ex
	}
	return true
}

// sorted returns the groups, newest example first.
func (t *groupTable) sorted() []Group {
	gs := make([]Group, 0, len(t.m))
	for _, g := range t.m {
		gs = append(gs, *g)
	}
	slices.SortFunc(gs, func(a, b Group) int {
		if c := b.Example.ts.Compare(a.Example.ts); c != 0 {
			return c
		}
		if c := int(b.Count - a.Count); c != 0 {
			return c
		}
		return strings.Compare(a.Rule+a.Who+a.SenderDomain+a.RecipientDomain, b.Rule+b.Who+b.SenderDomain+b.RecipientDomain)
	})
	return gs
}

// Report returns the report so far.
func (r *Replayer) Report() Report {
	rep := r.rep
	rep.Outcomes = make(map[string]int64, len(r.rep.Outcomes))
	for k, v := range r.rep.Outcomes {
		rep.Outcomes[k] = v
	}
	// The candidate's rules in its order, then the checks that are not
	// rules (limits, default, ...).
	order := r.opt.Candidate.Rules()
	for _, name := range order {
		if rc := r.perRule[name]; rc != nil {
			rep.Rules = append(rep.Rules, *rc)
		} else {
			rep.Rules = append(rep.Rules, RuleCount{Rule: name})
		}
	}
	var rest []string
	for name := range r.perRule {
		if !slices.Contains(order, name) {
			rest = append(rest, name)
		}
	}
	slices.Sort(rest)
	for _, name := range rest {
		rep.Rules = append(rep.Rules, *r.perRule[name])
	}
	for _, sc := range r.shadow {
		rep.Shadow = append(rep.Shadow, *sc)
	}
	slices.SortFunc(rep.Shadow, func(a, b ShadowCount) int { return strings.Compare(a.Rule+a.Would, b.Rule+b.Would) })
	rep.ByRule = r.byRule.sorted()
	rep.ByEnvelope = r.byEnv.sorted()
	return rep
}

// parseTime reads zap's ISO 8601 time ("2026-12-03T18:26:34.123Z") or
// RFC 3339.
func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, errors.New("missing")
	}
	for _, layout := range []string{"2006-01-02T15:04:05.000Z0700", time.RFC3339Nano} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%q is not an ISO 8601 time", s)
}

// parseAddr parses an address as the log writes it (the null sender as
// ""), with SMTPUTF8 when it is not ASCII.
func parseAddr(s string) (policy.Address, error) {
	ascii := true
	for i := 0; i < len(s); i++ {
		ascii = ascii && s[i] < 0x80
	}
	return policy.ParseAddress(s, !ascii)
}

func domainOf(a policy.Address) string {
	if a.IsNull() {
		return "<>"
	}
	return a.Domain
}

// network is the client's /24 (IPv4) or /64 (IPv6): the group of a client
// that did not log in, without keeping one group per address.
func network(ip netip.Addr) string {
	ip = ip.Unmap()
	bits := 64
	if ip.Is4() {
		bits = 24
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return ip.String()
	}
	return p.String()
}
