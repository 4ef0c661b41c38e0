package policy

import (
	"errors"
	"fmt"
	"strings"
)

// Address patterns: the one pattern syntax of policy files, used by rules
// (senders, recipients) and sender_ownership (may_send_as).
//
//	LOCAL@DOMAIN   compared without regard to case
//	LOCAL          a local part; "*" matches any run of characters in it:
//	               "*", "alice", "bounce-*", "alice+*"
//	DOMAIN         "*" (any domain), "example.org" (exactly), or
//	               "*.example.org" (every subdomain, not example.org itself),
//	               the same wildcard as local_domains; IDN either way
//	"<>"           the null sender (a bounce); "*@*" does not match it
//	"{user}"       in may_send_as only: the logged-in user name, as the whole
//	               local part ("{user}@example.org", "{user}+*@example.org")
//	               or as the whole pattern when logins are addresses
//	"{addresses}"  in may_send_as only: any of the user's own addresses in
//	               the directory that accepted the password
//
// There are no regular expressions. A pattern that grants something (a rule
// that accepts or requires auth, may_send_as) never matches an address with
// routing tricks in its local part (%, !, a quoted @) or an address literal;
// a pattern in a rule that rejects or tempfails matches them as written.

// tokKind is one piece of a local-part glob.
type tokKind uint8

const (
	tokLit tokKind = iota
	tokStar
	tokUser
)

type tok struct {
	kind tokKind
	lit  string // lower case
}

// domKind is how a pattern matches the domain.
type domKind uint8

const (
	domAny   domKind = iota // "*"
	domExact                // "example.org"
	domWild                 // "*.example.org": strict subdomains
)

// Pattern is one parsed address pattern.
type Pattern struct {
	text    string
	null    bool // "<>"
	whole   bool // "{user}" alone: the address equals the login
	local   []tok
	anyLoc  bool // local part is "*"
	exact   bool // local part has no "*" and no {user}
	dkind   domKind
	domain  string
	hasUser bool
	addrs   bool // "{addresses}"
}

// String returns the pattern as written.
func (p *Pattern) String() string { return p.text }

// parsePattern parses one pattern; allowUser permits {user}.
func parsePattern(s string, allowUser bool) (*Pattern, error) {
	p := &Pattern{text: s}
	if s == "<>" {
		p.null = true
		return p, nil
	}
	if s == "" {
		return nil, errors.New(`an empty pattern; write "<>" for the null sender`)
	}
	if i := strings.LastIndexByte(s, '@'); i >= 0 && strings.HasPrefix(s[i+1:], "[") {
		return nil, fmt.Errorf("%q: address literals cannot be matched by pattern; use \"*@*\" in a rule that rejects", s)
	}
	if strings.HasPrefix(s, "re:") || strings.HasPrefix(s, "^") || strings.HasSuffix(s, "$") || strings.ContainsAny(s, `\()[]`) {
		return nil, fmt.Errorf("%q: regular expressions are not supported; use * globs such as \"*@example.org\" or \"*@*.example.org\"", s)
	}
	if s == "{addresses}" {
		if !allowUser {
			return nil, fmt.Errorf("%q: {addresses} is allowed only in sender_ownership may_send_as", s)
		}
		p.addrs = true
		return p, nil
	}
	if s == "{user}" {
		if !allowUser {
			return nil, fmt.Errorf("%q: {user} is allowed only in sender_ownership may_send_as", s)
		}
		p.whole, p.hasUser = true, true
		return p, nil
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return nil, fmt.Errorf("%q is not a pattern such as \"*@example.org\", \"alice@example.org\" or \"<>\" (no @)", s)
	}
	local, domain := s[:at], s[at+1:]
	if local == "" {
		return nil, fmt.Errorf("%q: empty local part (write \"*@%s\" for any)", s, domain)
	}
	if err := p.parseLocal(local, allowUser); err != nil {
		return nil, fmt.Errorf("%q: %w", s, err)
	}
	switch {
	case domain == "*":
		p.dkind = domAny
	case strings.HasPrefix(domain, "*."):
		d, err := normalizeDomain(domain[2:], true)
		if err != nil {
			return nil, fmt.Errorf("%q: %q is not a valid domain: %w", s, domain, err)
		}
		p.dkind, p.domain = domWild, d
	default:
		if strings.Contains(domain, "*") {
			return nil, fmt.Errorf("%q: in the domain a wildcard is allowed only as \"*\" or a leading \"*.\"", s)
		}
		if strings.HasPrefix(domain, "[") {
			return nil, fmt.Errorf("%q: address literals cannot be matched by pattern; use \"*@*\" in a rule that rejects", s)
		}
		d, err := normalizeDomain(domain, true)
		if err != nil {
			return nil, fmt.Errorf("%q: %q is not a valid domain: %w", s, domain, err)
		}
		p.dkind, p.domain = domExact, d
	}
	return p, nil
}

func (p *Pattern) parseLocal(local string, allowUser bool) error {
	if local == "*" {
		p.anyLoc = true
		p.local = []tok{{kind: tokStar}}
		return nil
	}
	rest := local
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			p.local = append(p.local, tok{kind: tokLit, lit: strings.ToLower(lit.String())})
			lit.Reset()
		}
	}
	for rest != "" {
		switch {
		case strings.HasPrefix(rest, "{user}"):
			if !allowUser {
				return errors.New("{user} is allowed only in sender_ownership may_send_as")
			}
			flush()
			p.local = append(p.local, tok{kind: tokUser})
			p.hasUser = true
			rest = rest[len("{user}"):]
		case rest[0] == '*':
			flush()
			if n := len(p.local); n == 0 || p.local[n-1].kind != tokStar {
				p.local = append(p.local, tok{kind: tokStar})
			}
			rest = rest[1:]
		case rest[0] == '{' || rest[0] == '}':
			return errors.New("braces are allowed only as {user}")
		case rest[0] == '.' || isAtext(rest[0]):
			lit.WriteByte(rest[0])
			rest = rest[1:]
		default:
			return fmt.Errorf("character %q is not allowed in a local-part pattern", rest[0])
		}
	}
	flush()
	p.exact = len(p.local) == 1 && p.local[0].kind == tokLit
	return nil
}

// matchAddr reports whether the pattern matches an address. lowerLocal is
// a.Local in lower case; lowerUser the login in lower case.
func (p *Pattern) matchAddr(a Address, lowerLocal, lowerUser string) bool {
	if p.null || a.IsNull() {
		return p.null && a.IsNull()
	}
	if p.whole {
		l, d, ok := cutLast(lowerUser, '@')
		return ok && l == lowerLocal && d == a.Domain
	}
	if p.hasUser && lowerUser == "" {
		return false
	}
	if !p.matchDomain(a.Domain) {
		return false
	}
	if p.anyLoc {
		return true
	}
	return matchTokens(p.local, lowerLocal, lowerUser)
}

func cutLast(s string, c byte) (string, string, bool) {
	i := strings.LastIndexByte(s, c)
	if i < 0 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

func (p *Pattern) matchDomain(d string) bool {
	switch p.dkind {
	case domAny:
		return true
	case domExact:
		return d == p.domain
	}
	return len(d) > len(p.domain)+1 && strings.HasSuffix(d, p.domain) && d[len(d)-len(p.domain)-1] == '.'
}

// matchTokens is glob matching where "*" matches any run of bytes; the
// classic linear scan that backtracks only to the last star.
func matchTokens(toks []tok, s, user string) bool {
	ti, si := 0, 0
	starTi, starSi := -1, 0
	for {
		if ti < len(toks) {
			t := toks[ti]
			if t.kind == tokStar {
				starTi, starSi = ti, si
				ti++
				continue
			}
			lit := t.lit
			if t.kind == tokUser {
				lit = user
			}
			if strings.HasPrefix(s[si:], lit) {
				ti++
				si += len(lit)
				continue
			}
		} else if si == len(s) {
			return true
		}
		if starTi < 0 || starSi >= len(s) {
			return false
		}
		starSi++
		ti, si = starTi+1, starSi
	}
}

// covers reports whether every address p matches is also matched by q, as
// far as can be told from the patterns; false when unsure. Used to find
// rules that can never match.
func (q *Pattern) covers(p *Pattern) bool {
	if q.null || p.null {
		return q.null && p.null
	}
	if q.hasUser || p.hasUser || q.addrs || p.addrs {
		return q.text == p.text
	}
	// domain
	switch q.dkind {
	case domAny:
	case domExact:
		if p.dkind != domExact || p.domain != q.domain {
			return false
		}
	case domWild:
		switch p.dkind {
		case domAny:
			return false
		case domExact:
			if !q.matchDomain(p.domain) {
				return false
			}
		case domWild:
			if p.domain != q.domain && !q.matchDomain(p.domain) {
				return false
			}
		}
	}
	// local part
	if q.anyLoc {
		return true
	}
	if p.exact {
		return matchTokens(q.local, p.local[0].lit, "")
	}
	return equalTokens(q.local, p.local)
}

func equalTokens(a, b []tok) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// patternSet is a list of patterns with constant-time lookup for the common
// shapes: "*@domain" and "*@*.domain" are map lookups (per label of the
// address's domain), exact addresses are two map lookups; only patterns
// with a glob in the local part are tried one by one.
type patternSet struct {
	items     []*Pattern
	null      bool
	addresses bool                           // "{addresses}": checked by the caller
	any       bool                           // "*@*"
	byDomain  map[string]struct{}            // "*@d"
	byWild    map[string]struct{}            // "*@*.d"
	exact     map[string]map[string]struct{} // domain -> lower local
	others    []*Pattern
}

func newPatternSet(ps []*Pattern) *patternSet {
	s := &patternSet{items: ps}
	for _, p := range ps {
		switch {
		case p.null:
			s.null = true
		case p.addrs:
			s.addresses = true
		case p.hasUser || p.whole:
			s.others = append(s.others, p)
		case p.anyLoc && p.dkind == domAny:
			s.any = true
		case p.anyLoc && p.dkind == domExact:
			if s.byDomain == nil {
				s.byDomain = map[string]struct{}{}
			}
			s.byDomain[p.domain] = struct{}{}
		case p.anyLoc && p.dkind == domWild:
			if s.byWild == nil {
				s.byWild = map[string]struct{}{}
			}
			s.byWild[p.domain] = struct{}{}
		case p.exact && p.dkind == domExact:
			if s.exact == nil {
				s.exact = map[string]map[string]struct{}{}
			}
			m := s.exact[p.domain]
			if m == nil {
				m = map[string]struct{}{}
				s.exact[p.domain] = m
			}
			m[p.local[0].lit] = struct{}{}
		default:
			s.others = append(s.others, p)
		}
	}
	return s
}

// match reports whether any pattern matches a. grant says the set grants
// something: then tricky addresses never match (see the package comment on
// patterns).
func (s *patternSet) match(a Address, lowerLocal, lowerUser string, grant bool) bool {
	if a.IsNull() {
		return s.null
	}
	if grant && (a.Ambiguous() || a.IsLiteral()) {
		return false
	}
	if s.any {
		return true
	}
	if _, ok := s.byDomain[a.Domain]; ok {
		return true
	}
	if len(s.byWild) > 0 {
		for rest := a.Domain; ; {
			i := strings.IndexByte(rest, '.')
			if i < 0 {
				break
			}
			rest = rest[i+1:]
			if _, ok := s.byWild[rest]; ok {
				return true
			}
		}
	}
	if m := s.exact[a.Domain]; m != nil {
		if _, ok := m[lowerLocal]; ok {
			return true
		}
	}
	for _, p := range s.others {
		if p.matchAddr(a, lowerLocal, lowerUser) {
			return true
		}
	}
	return false
}

// covers reports whether s matches everything t matches (when sure).
func (s *patternSet) covers(t *patternSet) bool {
	for _, p := range t.items {
		ok := false
		for _, q := range s.items {
			if q.covers(p) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// isAny reports whether the set matches every non-null address.
func (s *patternSet) isAny() bool { return s.any }

func (s *patternSet) String() string {
	texts := make([]string, len(s.items))
	for i, p := range s.items {
		texts[i] = p.text
	}
	return strings.Join(texts, ", ")
}
