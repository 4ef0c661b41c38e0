package audit

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// SPFDirective is one mechanism of an SPF record with its qualifier.
type SPFDirective struct {
	// Qualifier is '+', '-', '~' or '?'; '+' when none was written.
	Qualifier byte
	// Mechanism is the lower-case name: all, include, a, mx, ptr, ip4, ip6
	// or exists.
	Mechanism string
	// Arg is what follows the ":" (a domain-spec or a network), without the
	// CIDR lengths; empty when none was given.
	Arg string
}

// SPFRecord is a parsed SPF record (RFC 7208 section 4.6.1).
type SPFRecord struct {
	// Directives in record order.
	Directives []SPFDirective
	// Redirect and Exp are the modifiers' domain-specs; empty when absent.
	Redirect, Exp string
}

// IsSPFRecord reports whether a TXT record is an SPF record: it starts with
// "v=spf1" followed by a space or the end (RFC 7208 4.5).
func IsSPFRecord(txt string) bool {
	if len(txt) < 6 || !strings.EqualFold(txt[:6], "v=spf1") {
		return false
	}
	return len(txt) == 6 || txt[6] == ' '
}

// ParseSPF parses an SPF record strictly by the ABNF of RFC 7208 4.6.1 and
// 7.1: an error here is a permerror at every receiver.
func ParseSPF(txt string) (*SPFRecord, error) {
	if !IsSPFRecord(txt) {
		return nil, errors.New(`does not start with "v=spf1"`)
	}
	r := &SPFRecord{}
	for _, term := range strings.Split(txt[6:], " ") {
		if term == "" {
			continue
		}
		if name, value, ok := splitModifier(term); ok {
			if err := checkDomainSpec(value, false); err != nil {
				return nil, fmt.Errorf("modifier %q: %w", term, err)
			}
			switch strings.ToLower(name) {
			case "redirect":
				if r.Redirect != "" {
					return nil, errors.New("redirect= given twice")
				}
				r.Redirect = value
			case "exp":
				if r.Exp != "" {
					return nil, errors.New("exp= given twice")
				}
				r.Exp = value
			}
			continue
		}
		d, err := parseDirective(term)
		if err != nil {
			return nil, fmt.Errorf("term %q: %w", term, err)
		}
		r.Directives = append(r.Directives, d)
	}
	return r, nil
}

// splitModifier recognises name=value, name = ALPHA *(ALPHA / DIGIT / "-"
// / "_" / ".").
func splitModifier(term string) (name, value string, ok bool) {
	name, value, ok = strings.Cut(term, "=")
	if !ok || name == "" || !isAlpha(name[0]) {
		return "", "", false
	}
	for i := 1; i < len(name); i++ {
		c := name[i]
		if !isAlpha(c) && !isDigit(c) && c != '-' && c != '_' && c != '.' {
			return "", "", false
		}
	}
	return name, value, true
}

func parseDirective(term string) (SPFDirective, error) {
	d := SPFDirective{Qualifier: '+'}
	if strings.ContainsRune("+-~?", rune(term[0])) {
		d.Qualifier, term = term[0], term[1:]
	}
	name, arg, hasArg := strings.Cut(term, ":")
	cidr := ""
	if !hasArg {
		name, cidr, _ = strings.Cut(name, "/")
		if strings.Contains(term, "/") {
			cidr = "/" + cidr
		}
	}
	d.Mechanism = strings.ToLower(name)
	switch d.Mechanism {
	case "all":
		if hasArg || cidr != "" {
			return d, errors.New("all takes no argument")
		}
	case "include", "exists":
		if !hasArg {
			return d, errors.New(d.Mechanism + " needs a domain")
		}
		if err := checkDomainSpec(arg, true); err != nil {
			return d, err
		}
		d.Arg = arg
	case "ptr":
		if hasArg {
			if err := checkDomainSpec(arg, true); err != nil {
				return d, err
			}
			d.Arg = arg
		}
		if cidr != "" {
			return d, errors.New("ptr takes no CIDR length")
		}
	case "a", "mx":
		if hasArg {
			arg, cidr = splitCIDR(arg)
			if err := checkDomainSpec(arg, true); err != nil {
				return d, err
			}
			d.Arg = arg
		}
		if err := checkDualCIDR(cidr); err != nil {
			return d, err
		}
	case "ip4", "ip6":
		if !hasArg {
			return d, errors.New(d.Mechanism + " needs an address")
		}
		addr, length, hasLen := strings.Cut(arg, "/")
		ip, err := netip.ParseAddr(addr)
		if err != nil || ip.Zone() != "" || (d.Mechanism == "ip4") != ip.Is4() {
			return d, fmt.Errorf("%q is not an %s address", addr, map[string]string{"ip4": "IPv4", "ip6": "IPv6"}[d.Mechanism])
		}
		max := 32
		if d.Mechanism == "ip6" {
			max = 128
		}
		if hasLen {
			if err := checkCIDRLength(length, max); err != nil {
				return d, err
			}
		}
		d.Arg = arg
	default:
		return d, fmt.Errorf("unknown mechanism %q", name)
	}
	return d, nil
}

// splitCIDR splits "domain/24//64" into "domain" and "/24//64". A
// domain-spec never holds "/" outside a macro, where it is a delimiter.
func splitCIDR(arg string) (string, string) {
	depth := 0
	for i := 0; i < len(arg); i++ {
		switch arg[i] {
		case '{':
			depth++
		case '}':
			depth--
		case '/':
			if depth == 0 {
				return arg[:i], arg[i:]
			}
		}
	}
	return arg, ""
}

// checkDualCIDR validates dual-cidr-length: [ "/" ip4 ] [ "//" ip6 ].
func checkDualCIDR(s string) error {
	if s == "" {
		return nil
	}
	v4, v6, dual := strings.Cut(s, "//")
	if v4 != "" {
		l, ok := strings.CutPrefix(v4, "/")
		if !ok {
			return fmt.Errorf("bad CIDR length %q", s)
		}
		if err := checkCIDRLength(l, 32); err != nil {
			return err
		}
	}
	if dual {
		if err := checkCIDRLength(v6, 128); err != nil {
			return err
		}
	}
	return nil
}

// checkCIDRLength validates a prefix length: digits, no leading zero.
func checkCIDRLength(s string, max int) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > max || (len(s) > 1 && s[0] == '0') || strings.ContainsAny(s, "+-") {
		return fmt.Errorf("bad CIDR length %q (0 to %d)", s, max)
	}
	return nil
}

// checkDomainSpec validates a macro-string (RFC 7208 7.1) and, for a
// domain-spec in a mechanism or redirect (needEnd), that it ends in a
// top-level label or a macro.
func checkDomainSpec(s string, needEnd bool) error {
	if s == "" {
		return errors.New("empty domain")
	}
	endsInMacro := false
	var lit strings.Builder // the text with macros removed, for the end check
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			if c < 0x21 || c > 0x7e {
				return fmt.Errorf("bad character %q in %q", c, s)
			}
			lit.WriteByte(c)
			endsInMacro = false
			continue
		}
		if i+1 >= len(s) {
			return fmt.Errorf("%q ends with a lone %%", s)
		}
		switch s[i+1] {
		case '%', '_', '-':
			i++
			lit.WriteByte('x')
			endsInMacro = false
		case '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return fmt.Errorf("unclosed macro in %q", s)
			}
			if err := checkMacro(s[i+2 : i+end]); err != nil {
				return fmt.Errorf("%q: %w", s, err)
			}
			i += end
			endsInMacro = true
			lit.Reset()
		default:
			return fmt.Errorf("bad macro %q in %q", s[i:i+2], s)
		}
	}
	if !needEnd || endsInMacro {
		return nil
	}
	name := strings.TrimSuffix(lit.String(), ".")
	dot := strings.LastIndexByte(name, '.')
	if dot < 0 {
		return fmt.Errorf("%q is not a domain name (no dot)", s)
	}
	if !isTopLabel(name[dot+1:]) {
		return fmt.Errorf("%q does not end in a valid top-level label", s)
	}
	return nil
}

// checkMacro validates the inside of %{...}: a letter, digits, an optional
// "r", then delimiters.
func checkMacro(m string) error {
	if m == "" || !strings.ContainsRune("slodiphcrtvSLODIPHCRTV", rune(m[0])) {
		return fmt.Errorf("bad macro letter in %%{%s}", m)
	}
	i := 1
	for i < len(m) && isDigit(m[i]) {
		i++
	}
	if i < len(m) && (m[i] == 'r' || m[i] == 'R') {
		i++
	}
	for ; i < len(m); i++ {
		if !strings.ContainsRune(".-+,/_=", rune(m[i])) {
			return fmt.Errorf("bad macro %%{%s}", m)
		}
	}
	return nil
}

// isTopLabel: alphanumerics with at least one letter, or a hyphenated label
// that neither starts nor ends with "-" (RFC 7208 7.1 toplabel).
func isTopLabel(l string) bool {
	if l == "" || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	alpha := false
	for i := 0; i < len(l); i++ {
		c := l[i]
		switch {
		case isAlpha(c):
			alpha = true
		case isDigit(c):
		case c == '-':
			alpha = true // the second form: 1*alphanum "-" ... alphanum
		default:
			return false
		}
	}
	return alpha
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// All returns the qualifier of the record's "all" mechanism, if any.
func (r *SPFRecord) All() (byte, bool) {
	for _, d := range r.Directives {
		if d.Mechanism == "all" {
			return d.Qualifier, true
		}
	}
	return 0, false
}

// lookupTerms counts the terms that cost a DNS lookup (RFC 7208 4.6.4):
// include, a, mx, ptr, exists, and redirect unless "all" makes it moot.
func (r *SPFRecord) lookupTerms() int {
	n := 0
	for _, d := range r.Directives {
		switch d.Mechanism {
		case "include", "a", "mx", "ptr", "exists":
			n++
		}
	}
	if _, ok := r.All(); !ok && r.Redirect != "" {
		n++
	}
	return n
}

// txtLookup returns the TXT records at a name (none for NXDOMAIN).
type txtLookup func(ctx context.Context, name string) ([]string, error)

// spfMaxLookups is RFC 7208 4.6.4's limit on lookup terms.
const spfMaxLookups = 10

// spfAt fetches and parses the one SPF record at domain.
func spfAt(ctx context.Context, lookup txtLookup, domain string) (*SPFRecord, []string, error) {
	txts, err := lookup(ctx, domain)
	if err != nil {
		return nil, nil, err
	}
	var recs []string
	for _, t := range txts {
		if IsSPFRecord(t) {
			recs = append(recs, t)
		}
	}
	if len(recs) != 1 {
		return nil, recs, nil
	}
	r, err := ParseSPF(recs[0])
	if err != nil {
		return nil, recs, fmt.Errorf("syntax error in %q: %w", recs[0], err)
	}
	return r, recs, nil
}

// CheckSPF grades the SPF record of domain, looking records up with lookup:
// none, several, a syntax error, "+all" and more than 10 lookups fail;
// "?all", "~all" or no "all" at all are warnings; "-all" is good. Includes
// and redirects are followed to count lookups and to find the "all" that
// applies.
func CheckSPF(ctx context.Context, domain string, lookup txtLookup) Finding {
	f := Finding{Check: "spf"}
	rec, recs, err := spfAt(ctx, lookup, domain)
	switch {
	case err != nil && rec == nil && len(recs) == 1:
		f.Grade, f.Detail = Fail, err.Error()+" (permerror: receivers ignore the record)"
		f.Advice = "fix the record's syntax; check it with tlsguard audit --domain again"
		return f
	case err != nil:
		f.Grade, f.Detail = Warning, err.Error()
		f.Advice = "the SPF record could not be read; check the resolver and rerun"
		return f
	case len(recs) == 0:
		f.Grade, f.Detail = Fail, "no SPF record at "+domain+": anyone may send mail as @"+domain
		f.Advice = `publish one TXT record "v=spf1 <your senders> -all"`
		return f
	case len(recs) > 1:
		f.Grade = Fail
		f.Detail = fmt.Sprintf("%d SPF records at %s (permerror, RFC 7208 4.5): %q", len(recs), domain, recs)
		f.Advice = "merge them into a single v=spf1 record"
		return f
	}

	w := &spfWalk{ctx: ctx, lookup: lookup, seen: map[string]bool{strings.ToLower(domain): true}}
	w.count(rec, 0)
	qual, hasAll, allFrom := w.effectiveAll(rec, domain)
	f.Detail = recs[0]
	var notes []string
	grade := OK
	worse := func(g Grade) {
		if rank(g) > rank(grade) {
			grade = g
		}
	}
	switch {
	case !hasAll:
		worse(Warning)
		notes = append(notes, "no \"all\": hosts not listed get neutral, as with ?all")
		f.Advice = "end the record with -all (or ~all while DMARC reports are checked)"
	case qual == '+':
		worse(Fail)
		notes = append(notes, "+all: every host on the Internet may send as @"+domain)
		f.Advice = "replace +all with -all"
	case qual == '?':
		worse(Warning)
		notes = append(notes, "?all (neutral): unlisted hosts are neither allowed nor refused")
		f.Advice = "end the record with -all"
	case qual == '~':
		worse(Warning)
		notes = append(notes, "~all (softfail): unlisted hosts are only marked")
		f.Advice = "move to -all once DMARC reports show every legitimate sender listed"
	}
	if hasAll && allFrom != domain {
		notes = append(notes, "all from redirect to "+allFrom)
	}
	if w.lookups > spfMaxLookups {
		worse(Fail)
		notes = append(notes, fmt.Sprintf("%d DNS lookups (limit %d, RFC 7208 4.6.4: permerror)", w.lookups, spfMaxLookups))
		f.Advice = "flatten includes to ip4:/ip6: ranges to stay within 10 lookups"
	}
	for _, p := range w.problems {
		worse(Fail)
		notes = append(notes, p)
		if f.Advice == "" {
			f.Advice = "fix or remove the broken include/redirect"
		}
	}
	if w.ptr {
		worse(Warning)
		notes = append(notes, "uses ptr (RFC 7208 5.5: SHOULD NOT)")
		if f.Advice == "" {
			f.Advice = "replace ptr with a, mx or ip4:/ip6: ranges: it is slow and unreliable"
		}
	}
	if grade == OK {
		f.Advice = ""
	}
	f.Grade = grade
	if len(notes) > 0 {
		f.Detail += " — " + strings.Join(notes, "; ")
	}
	return f
}

func rank(g Grade) int {
	switch g {
	case Fail:
		return 3
	case Warning:
		return 2
	case OK:
		return 1
	}
	return 0
}

// spfWalk follows includes and redirects to count lookups.
type spfWalk struct {
	ctx      context.Context
	lookup   txtLookup
	seen     map[string]bool
	lookups  int
	problems []string
	ptr      bool
}

func (w *spfWalk) count(r *SPFRecord, depth int) {
	w.lookups += r.lookupTerms()
	if depth > spfMaxLookups || w.lookups > spfMaxLookups {
		return
	}
	var next []string
	for _, d := range r.Directives {
		if d.Mechanism == "ptr" {
			w.ptr = true
		}
		if d.Mechanism == "include" {
			next = append(next, d.Arg)
		}
	}
	if _, ok := r.All(); !ok && r.Redirect != "" {
		next = append(next, r.Redirect)
	}
	for _, name := range next {
		if strings.Contains(name, "%") {
			continue // macro: depends on the sender, cannot be followed here
		}
		key := strings.ToLower(strings.TrimSuffix(name, "."))
		if w.seen[key] {
			continue
		}
		w.seen[key] = true
		sub, recs, err := spfAt(w.ctx, w.lookup, name)
		switch {
		case err != nil && len(recs) == 1:
			w.problems = append(w.problems, name+": "+err.Error())
		case err != nil:
			w.problems = append(w.problems, err.Error())
		case len(recs) == 0:
			w.problems = append(w.problems, name+" has no SPF record (permerror)")
		case len(recs) > 1:
			w.problems = append(w.problems, name+" has several SPF records (permerror)")
		default:
			w.count(sub, depth+1)
		}
	}
}

// effectiveAll finds the "all" that applies: the record's own, or the one
// at the end of its redirect chain (RFC 7208 6.1).
func (w *spfWalk) effectiveAll(r *SPFRecord, domain string) (byte, bool, string) {
	for hops := 0; hops <= spfMaxLookups; hops++ {
		if q, ok := r.All(); ok {
			return q, true, domain
		}
		if r.Redirect == "" || strings.Contains(r.Redirect, "%") {
			return 0, false, domain
		}
		next, recs, err := spfAt(w.ctx, w.lookup, r.Redirect)
		if err != nil || len(recs) != 1 {
			return 0, false, domain
		}
		r, domain = next, r.Redirect
	}
	return 0, false, domain
}
