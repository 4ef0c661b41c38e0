package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tlsguard/tlsguard/internal/yamlx"
)

// policyFile is the YAML model of a policy file; docs/policy.md and the
// files in policies/ describe it for the people who edit it.
type policyFile struct {
	Pos             yamlx.Pos
	LocalDomains    []domainEntry  `yaml:"local_domains"`
	TrustedNetworks []networkEntry `yaml:"trusted_networks"`
	Groups          []groupFile    `yaml:"groups"`
	Rules           []ruleFile     `yaml:"rules"`
	SenderOwnership []ownerFile    `yaml:"sender_ownership"`
	Limits          []limitFile    `yaml:"limits"`
	RateLimits      []rateFile     `yaml:"rate_limits"`
	// AllowOpenRelay turns off the open-relay refusals (a test lab only).
	AllowOpenRelay bool `yaml:"allow_open_relay"`
}

// domainEntry is one item of local_domains with the line it is on.
type domainEntry struct {
	DomainPattern
	line int
}

// UnmarshalYAMLX implements yamlx.Unmarshaler.
func (e *domainEntry) UnmarshalYAMLX(n *yaml.Node) error {
	// A plain true, 123 or 1.5 is YAML for a boolean or a number, never
	// meant as a domain: insist on a string.
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return fmt.Errorf(`must be a domain such as example.org or "*.example.org", not %s`, describe(n))
	}
	p, err := ParseDomainPattern(n.Value)
	if err != nil {
		return err
	}
	e.DomainPattern, e.line = p, n.Line
	return nil
}

// networkEntry is one item of trusted_networks with the line it is on.
type networkEntry struct {
	prefix netip.Prefix
	line   int
}

// UnmarshalYAMLX implements yamlx.Unmarshaler.
func (e *networkEntry) UnmarshalYAMLX(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return fmt.Errorf(`must be a network such as 192.0.2.0/24 or "2001:db8::/32", not %s`, describe(n))
	}
	p, err := ParseNetwork(n.Value)
	if err != nil {
		return err
	}
	e.prefix, e.line = p, n.Line
	return nil
}

// ParseNetwork parses a CIDR prefix ("192.0.2.0/24", "2001:db8::/32") or a
// single address (as a /32 or /128). Host bits must be zero, so that
// "10.1.2.3/8" is caught as a likely typo. An IPv4-mapped IPv6 prefix
// (::ffff:10.0.0.0/104) is converted to IPv4, since client addresses are
// compared in their IPv4 form. Zones are refused.
func ParseNetwork(s string) (netip.Prefix, error) {
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		p, err = netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a network such as 192.0.2.0/24 or 2001:db8::/32", s)
		}
	} else {
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not a network such as 192.0.2.0/24 or 2001:db8::/32", s)
		}
		p = netip.PrefixFrom(ip, ip.BitLen())
	}
	if p.Addr().Is4In6() {
		if p.Bits() < 96 {
			return netip.Prefix{}, fmt.Errorf("%q: an IPv4-mapped prefix needs at least 96 bits; write the IPv4 network instead", s)
		}
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	if m := p.Masked(); m != p {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set; did you mean %s?", s, m)
	}
	return p, nil
}

// Load reads and parses the policy file at path. A problem in the file is
// reported as yamlx.Errors naming path, line and key.
func Load(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading policy: %w", err)
	}
	return Parse(path, data)
}

// Parse parses a policy from data; file names the source in errors. Every
// problem found is returned at once as yamlx.Errors ("file:line: key:
// message"), sorted by line.
func Parse(file string, data []byte) (*Policy, error) {
	var f policyFile
	var errs yamlx.Errors
	if err := yamlx.Decode(file, data, &f); err != nil {
		if !errors.As(err, &errs) {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		hintWildcardQuoting(errs)
	}
	if f.Pos.File == "" {
		f.Pos = yamlx.Pos{File: file, Line: 0}
	}
	p := &Policy{
		file: file,
		local: domainSet{
			exact: make(map[string]struct{}),
			wild:  make(map[string]struct{}),
		},
	}
	b := &builder{file: file, p: p, errs: errs, names: map[string]string{}, listeners: map[string]struct{}{}, openRelay: f.AllowOpenRelay}
	p.allowOpenRelay = f.AllowOpenRelay
	if f.AllowOpenRelay {
		p.warnings = append(p.warnings, fmt.Sprintf("%s:%d: allow_open_relay is true: rules and trusted networks that let anyone send anywhere are accepted; never use this on the internet", file, f.Pos.LineOf("allow_open_relay")))
	}

	seenDomain := map[DomainPattern]int{} // pattern -> index of first entry
	for i, e := range f.LocalDomains {
		if e.Domain == "" {
			continue // invalid; already reported
		}
		if j, dup := seenDomain[e.DomainPattern]; dup {
			b.errs = append(b.errs, &yamlx.Error{File: file, Line: e.line, Key: fmt.Sprintf("local_domains[%d]", i),
				Msg: fmt.Sprintf("duplicate of local_domains[%d] on line %d (both are %s)", j, f.LocalDomains[j].line, e.DomainPattern)})
			continue
		}
		seenDomain[e.DomainPattern] = i
		p.domains = append(p.domains, e.DomainPattern)
		if e.Wildcard {
			p.local.wild[e.Domain] = struct{}{}
		} else {
			p.local.exact[e.Domain] = struct{}{}
		}
	}

	seenNet := map[netip.Prefix]int{}
	for i, e := range f.TrustedNetworks {
		if !e.prefix.IsValid() {
			continue
		}
		key := fmt.Sprintf("trusted_networks[%d]", i)
		if j, dup := seenNet[e.prefix]; dup {
			b.errs = append(b.errs, &yamlx.Error{File: file, Line: e.line, Key: key,
				Msg: fmt.Sprintf("duplicate of trusted_networks[%d] on line %d (both are %s)", j, f.TrustedNetworks[j].line, e.prefix)})
			continue
		}
		if e.prefix.Bits() == 0 && !f.AllowOpenRelay {
			b.errs = append(b.errs, &yamlx.Error{File: file, Line: e.line, Key: key,
				Msg: fmt.Sprintf("%s is every address: trusting it makes an open relay", e.prefix)})
			continue
		}
		seenNet[e.prefix] = i
		p.trusted = append(p.trusted, e.prefix)
		if w := broadNetwork(e.prefix); w != "" {
			p.warnings = append(p.warnings, fmt.Sprintf("%s:%d: %s: %s", file, e.line, key, w))
		}
	}
	p.localSource = b.source(f.Pos, "local_domains")
	p.trustedSource = b.source(f.Pos, "trusted_networks")

	b.groups(f.Groups)
	if line, ok := f.Pos.Lines["rules"]; ok {
		b.rules(f.Rules)
		if len(f.Rules) == 0 {
			p.warnings = append(p.warnings, fmt.Sprintf("%s:%d: rules is empty: every recipient, local or not, gets the default refusal (remove the rules key for the built-in rules)", file, line))
		}
	} else {
		p.builtin = true
		p.rules = builtinRules(p)
	}
	b.owners(f.SenderOwnership)
	b.limits(f.Limits)
	b.rates(f.RateLimits)
	for _, g := range p.groupNames {
		if !b.usedGroup[g] {
			p.warnings = append(p.warnings, fmt.Sprintf("%s:%d: group %q is not used by any rule or entry", file, b.groupLine[g], g))
		}
	}
	for n := range b.listeners {
		p.listeners = append(p.listeners, n)
	}
	sort.Strings(p.listeners)

	if len(b.errs) > 0 {
		sort.SliceStable(b.errs, func(i, j int) bool { return b.errs[i].Line < b.errs[j].Line })
		return nil, b.errs
	}
	return p, nil
}

// builtinRules are the rules of a policy without a rules section: the
// behaviour of the core issue, written as rules so that explain shows them.
func builtinRules(p *Policy) []*rule {
	rs := []*rule{
		{name: RuleLocalDomains, source: p.localSource, index: -1, local: triTrue, action: actAccept},
		{name: RuleAuthenticated, source: p.file + " (built-in)", index: -1, sel: selector{auth: triTrue}, action: actAccept},
		{name: RuleTrustedNetworks, source: p.trustedSource, index: -1, sel: selector{trusted: triTrue}, action: actAccept},
	}
	for _, r := range rs {
		r.compile()
	}
	return rs
}

// builder turns the decoded file into a Policy, collecting every error.
type builder struct {
	file      string
	p         *Policy
	errs      yamlx.Errors
	names     map[string]string // rule/entry name -> "rules[2] on line 14"
	listeners map[string]struct{}
	usedGroup map[string]bool
	groupLine map[string]int
	openRelay bool // allow_open_relay
}

func (b *builder) errf(pos yamlx.Pos, key, format string, args ...any) {
	b.errs = append(b.errs, yamlx.Errorf(pos, key, format, args...))
}

func (b *builder) source(pos yamlx.Pos, key string) string {
	if l := pos.LineOf(key); l > 0 {
		return fmt.Sprintf("%s:%d", b.file, l)
	}
	return b.file
}

var reservedNames = map[string]bool{
	RuleLocalDomains: true, RuleAuthenticated: true, RuleTrustedNetworks: true,
	RuleDefault: true, RuleNoOwnership: true, RuleNoLimit: true, RuleNoRateLimit: true,
}

// name checks an entry's name: present, a simple word, unique across rules,
// sender_ownership, limits and rate_limits (they share the "rule" field of
// logs). It returns false if the entry should be skipped.
func (b *builder) name(pos yamlx.Pos, name string) bool {
	switch {
	case pos.File == "":
		return false // not a mapping: already reported by yamlx
	case name == "":
		b.errf(pos, "name", "is required: a short unique name, shown in logs and by policy explain")
		return false
	case !validName(name):
		b.errf(pos, "name", "%q: use letters, digits, '.', '_' and '-' only (at most 64)", name)
		return false
	case reservedNames[name]:
		b.errf(pos, "name", "%q is reserved for a built-in decision; choose another name", name)
		return false
	}
	if prev, dup := b.names[name]; dup {
		b.errf(pos, "name", "duplicate name %q (already used by %s)", name, prev)
		return false
	}
	b.names[name] = fmt.Sprintf("%s on line %d", pos.Key, pos.Line)
	return true
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// validUser accepts what a login can be: no spaces or control characters.
func validUser(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f {
			return false
		}
	}
	return true
}

// groupFile is one entry of groups.
type groupFile struct {
	Pos   yamlx.Pos
	Name  string      `yaml:"name"`
	Users []nameEntry `yaml:"users"`
	// DirectoryGroups adds every user whose directory entry lists one of
	// these groups (groups_attribute of an ldap source), compared without
	// regard to case.
	DirectoryGroups []string `yaml:"directory_groups"`
}

func (b *builder) groups(gs []groupFile) {
	b.p.groups = map[string][]string{}
	b.p.dirGroups = map[string][]string{}
	b.usedGroup = map[string]bool{}
	lines := map[string]int{}
	b.groupLine = lines
	for _, g := range gs {
		if g.Pos.File == "" {
			continue // not a mapping: already reported by yamlx
		}
		switch {
		case g.Name == "":
			b.errf(g.Pos, "name", "is required")
			continue
		case !validName(g.Name):
			b.errf(g.Pos, "name", "%q: use letters, digits, '.', '_' and '-' only (at most 64)", g.Name)
			continue
		}
		if l, dup := lines[g.Name]; dup {
			b.errf(g.Pos, "name", "duplicate group %q (already defined on line %d)", g.Name, l)
			continue
		}
		lines[g.Name] = g.Pos.Line
		if g.Users == nil && g.DirectoryGroups == nil {
			b.errf(g.Pos, "users", "is required: the logins in this group (or directory_groups)")
		}
		for i, d := range g.DirectoryGroups {
			if strings.TrimSpace(d) == "" {
				b.errf(g.Pos, fmt.Sprintf("directory_groups[%d]", i), "is empty")
				continue
			}
			b.p.dirGroups[g.Name] = append(b.p.dirGroups[g.Name], strings.ToLower(d))
		}
		seen := map[string]bool{}
		members := []string{}
		for i, u := range g.Users {
			if u.name == "" {
				continue
			}
			if !validUser(u.name) {
				b.errs = append(b.errs, &yamlx.Error{File: b.file, Line: u.line, Key: fmt.Sprintf("%s.users[%d]", g.Pos.Key, i), Msg: fmt.Sprintf("%q is not a user name", u.name)})
				continue
			}
			if seen[u.name] {
				b.errs = append(b.errs, &yamlx.Error{File: b.file, Line: u.line, Key: fmt.Sprintf("%s.users[%d]", g.Pos.Key, i), Msg: fmt.Sprintf("user %q is listed twice", u.name)})
				continue
			}
			seen[u.name] = true
			members = append(members, u.name)
		}
		b.p.groups[g.Name] = members
		b.p.groupNames = append(b.p.groupNames, g.Name)
	}
}

// selFile is the session conditions, as decoded, shared by rules,
// sender_ownership, limits and rate_limits.
type selFile struct {
	Listeners      []nameEntry
	TLS            *bool
	Authenticated  *bool
	Users          []nameEntry
	Groups         []nameEntry
	Networks       []networkEntry
	TrustedNetwork *bool
}

func (b *builder) selector(pos yamlx.Pos, f selFile) selector {
	var s selector
	empty := func(key string) {
		b.errf(pos, key, "an empty list matches nothing; remove %s to match any", key)
	}
	if f.Listeners != nil {
		if len(f.Listeners) == 0 {
			empty("listeners")
		}
		s.listeners = map[string]struct{}{}
		for _, l := range f.Listeners {
			if l.name != "" {
				s.listeners[l.name] = struct{}{}
				s.listNames = append(s.listNames, l.name)
				b.listeners[l.name] = struct{}{}
			}
		}
	}
	s.tls = triOf(f.TLS)
	s.auth = triOf(f.Authenticated)
	s.trusted = triOf(f.TrustedNetwork)
	if f.Users != nil || f.Groups != nil {
		if len(f.Users)+len(f.Groups) == 0 {
			empty("users")
		}
		if s.auth == triFalse {
			b.errf(pos, "authenticated", "authenticated: false with users or groups can never match")
		}
		s.auth = triTrue
		s.users = map[string]struct{}{}
		for i, u := range f.Users {
			if u.name == "" {
				continue
			}
			if !validUser(u.name) {
				b.errs = append(b.errs, &yamlx.Error{File: b.file, Line: u.line, Key: fmt.Sprintf("%s.users[%d]", pos.Key, i), Msg: fmt.Sprintf("%q is not a user name", u.name)})
				continue
			}
			s.users[u.name] = struct{}{}
			s.userNames = append(s.userNames, u.name)
		}
		for i, g := range f.Groups {
			if g.name == "" {
				continue
			}
			members, ok := b.p.groups[g.name]
			if !ok {
				b.errs = append(b.errs, &yamlx.Error{File: b.file, Line: g.line, Key: fmt.Sprintf("%s.groups[%d]", pos.Key, i),
					Msg: fmt.Sprintf("unknown group %q (%s)", g.name, knownGroups(b.p.groupNames))})
				continue
			}
			b.usedGroup[g.name] = true
			s.groups = append(s.groups, g.name)
			for _, m := range members {
				s.users[m] = struct{}{}
			}
			for _, d := range b.p.dirGroups[g.name] {
				if s.dirGroups == nil {
					s.dirGroups = map[string]struct{}{}
				}
				s.dirGroups[d] = struct{}{}
			}
		}
	}
	if f.Networks != nil {
		if len(f.Networks) == 0 {
			empty("networks")
		}
		s.networks = []netip.Prefix{}
		for _, n := range f.Networks {
			if n.prefix.IsValid() {
				s.networks = append(s.networks, n.prefix)
			}
		}
	}
	return s
}

func (b *builder) patterns(pos yamlx.Pos, key string, es []patternEntry) *patternSet {
	if es == nil {
		return nil
	}
	if len(es) == 0 {
		b.errf(pos, key, "an empty list matches nothing; remove %s to match any", key)
	}
	ps := make([]*Pattern, 0, len(es))
	for _, e := range es {
		if e.p != nil {
			ps = append(ps, e.p)
		}
	}
	return newPatternSet(ps)
}

// ruleFile is one entry of rules.
type ruleFile struct {
	Pos            yamlx.Pos
	Name           string         `yaml:"name"`
	Listeners      []nameEntry    `yaml:"listeners"`
	TLS            *bool          `yaml:"tls"`
	Authenticated  *bool          `yaml:"authenticated"`
	Users          []nameEntry    `yaml:"users"`
	Groups         []nameEntry    `yaml:"groups"`
	Networks       []networkEntry `yaml:"networks"`
	TrustedNetwork *bool          `yaml:"trusted_network"`
	Senders        []patternEntry `yaml:"senders"`
	Recipients     []patternEntry `yaml:"recipients"`
	LocalRecipient *bool          `yaml:"local_recipient"`
	Action         string         `yaml:"action"`
	Reply          string         `yaml:"reply"`
	Mode           string         `yaml:"mode"`
}

func (b *builder) rules(rfs []ruleFile) {
	for i, f := range rfs {
		if !b.name(f.Pos, f.Name) {
			continue
		}
		r := &rule{name: f.Name, source: fmt.Sprintf("%s:%d", b.file, f.Pos.Line), line: f.Pos.Line, index: i}
		r.sel = b.selector(f.Pos, selFile{f.Listeners, f.TLS, f.Authenticated, f.Users, f.Groups, f.Networks, f.TrustedNetwork})
		r.from = b.patterns(f.Pos, "senders", f.Senders)
		r.to = b.patterns(f.Pos, "recipients", f.Recipients)
		r.local = triOf(f.LocalRecipient)
		act, ok := actionNames[f.Action]
		if !ok {
			if f.Action == "" {
				b.errf(f.Pos, "action", "is required: accept, reject, tempfail or require_auth")
			} else {
				b.errf(f.Pos, "action", "%q is not one of accept, reject, tempfail, require_auth", f.Action)
			}
			continue
		}
		r.action = act
		switch f.Mode {
		case "", "enforce":
		case "shadow":
			r.shadow = true
		default:
			b.errf(f.Pos, "mode", "%q is not one of enforce, shadow", f.Mode)
			continue
		}
		if !b.ruleReply(f, r) {
			continue
		}
		if act == actAccept && !b.openRelay && !r.sel.restrictsClient() && r.local != triTrue && (r.to == nil || r.to.isAny()) {
			b.errf(f.Pos, "action", "this rule accepts any recipient from any client: an open relay; restrict it with authenticated, users, groups, networks, trusted_network, local_recipient or recipients (or, in a test lab only, set allow_open_relay: true)")
			continue
		}
		r.compile()
		for _, earlier := range b.p.rules {
			// A shadow rule decides nothing, so it hides no later rule.
			if !earlier.shadow && earlier.shadows(r) {
				b.errf(f.Pos, "name", "rule %q can never match: rule %q on line %d matches everything it matches (move it above %q or remove it)",
					r.name, earlier.name, earlier.line, earlier.name)
				break
			}
		}
		b.p.rules = append(b.p.rules, r)
	}
}

func (b *builder) ruleReply(f ruleFile, r *rule) bool {
	defaults := map[ruleAction]Reply{actReject: replyRejected, actTempFail: replyTempFail, actRequireAuth: replyRelayDenied}
	if f.Reply == "" {
		if _, set := f.Pos.Lines["reply"]; set {
			b.errf(f.Pos, "reply", "is empty; remove it for the default reply")
			return false
		}
		r.reply = defaults[r.action]
		return true
	}
	if r.action == actAccept {
		b.errf(f.Pos, "reply", "an accepted recipient gets the backend's own reply; reply is only for reject, tempfail and require_auth")
		return false
	}
	rep, err := ParseReply(f.Reply)
	if err != nil {
		b.errf(f.Pos, "reply", "%v", err)
		return false
	}
	switch {
	case r.action == actTempFail && rep.Code/100 != 4:
		b.errf(f.Pos, "reply", "tempfail needs a 4xx reply such as \"450 4.7.1 Try again later\", not %d", rep.Code)
		return false
	case r.action != actTempFail && rep.Code/100 != 5:
		b.errf(f.Pos, "reply", "%s needs a 5xx reply such as \"550 5.7.1 Not allowed\", not %d (use tempfail for 4xx)", r.action, rep.Code)
		return false
	}
	r.reply = rep
	return true
}

// ownerFile is one entry of sender_ownership.
type ownerFile struct {
	Pos       yamlx.Pos
	Name      string         `yaml:"name"`
	Users     []nameEntry    `yaml:"users"`
	Groups    []nameEntry    `yaml:"groups"`
	MaySendAs []grantPattern `yaml:"may_send_as"`
}

func (b *builder) owners(ofs []ownerFile) {
	for _, f := range ofs {
		if !b.name(f.Pos, f.Name) {
			continue
		}
		o := &owner{name: f.Name, source: fmt.Sprintf("%s:%d", b.file, f.Pos.Line)}
		o.sel = b.selector(f.Pos, selFile{Users: f.Users, Groups: f.Groups})
		o.conds = o.sel.conds()
		if len(f.MaySendAs) == 0 {
			b.errf(f.Pos, "may_send_as", "is required: the sender patterns these users may use, e.g. \"{user}@example.org\"")
			continue
		}
		ps := make([]*Pattern, 0, len(f.MaySendAs))
		for _, e := range f.MaySendAs {
			if e.p != nil {
				ps = append(ps, e.p)
			}
		}
		o.may = newPatternSet(ps)
		b.p.owners = append(b.p.owners, o)
	}
}

// limitFile is one entry of limits.
type limitFile struct {
	Pos            yamlx.Pos
	Name           string         `yaml:"name"`
	Listeners      []nameEntry    `yaml:"listeners"`
	TLS            *bool          `yaml:"tls"`
	Authenticated  *bool          `yaml:"authenticated"`
	Users          []nameEntry    `yaml:"users"`
	Groups         []nameEntry    `yaml:"groups"`
	Networks       []networkEntry `yaml:"networks"`
	TrustedNetwork *bool          `yaml:"trusted_network"`
	MaxRecipients  int            `yaml:"max_recipients"`
	MaxMessageSize yamlx.ByteSize `yaml:"max_message_size"`
}

func (b *builder) limits(lfs []limitFile) {
	for _, f := range lfs {
		if !b.name(f.Pos, f.Name) {
			continue
		}
		e := &limitEntry{name: f.Name, source: fmt.Sprintf("%s:%d", b.file, f.Pos.Line), maxRcpts: f.MaxRecipients, maxSize: int64(f.MaxMessageSize)}
		e.sel = b.selector(f.Pos, selFile{f.Listeners, f.TLS, f.Authenticated, f.Users, f.Groups, f.Networks, f.TrustedNetwork})
		e.conds = e.sel.conds()
		_, hasR := f.Pos.Lines["max_recipients"]
		_, hasS := f.Pos.Lines["max_message_size"]
		switch {
		case !hasR && !hasS:
			b.errf(f.Pos, "name", "sets no limit: add max_recipients or max_message_size")
			continue
		case hasR && f.MaxRecipients < 1:
			b.errf(f.Pos, "max_recipients", "must be at least 1")
			continue
		case hasS && f.MaxMessageSize < 1024:
			b.errf(f.Pos, "max_message_size", "must be at least 1K")
			continue
		}
		b.p.limits = append(b.p.limits, e)
	}
}

// rateFile is one entry of rate_limits.
type rateFile struct {
	Pos            yamlx.Pos
	Name           string         `yaml:"name"`
	Per            string         `yaml:"per"`
	Window         time.Duration  `yaml:"window"`
	Messages       int            `yaml:"messages"`
	Recipients     int            `yaml:"recipients"`
	Listeners      []nameEntry    `yaml:"listeners"`
	TLS            *bool          `yaml:"tls"`
	Authenticated  *bool          `yaml:"authenticated"`
	Users          []nameEntry    `yaml:"users"`
	Groups         []nameEntry    `yaml:"groups"`
	Networks       []networkEntry `yaml:"networks"`
	TrustedNetwork *bool          `yaml:"trusted_network"`
}

func (b *builder) rates(rfs []rateFile) {
	for _, f := range rfs {
		if !b.name(f.Pos, f.Name) {
			continue
		}
		r := &rateLimit{name: f.Name, source: fmt.Sprintf("%s:%d", b.file, f.Pos.Line), window: f.Window, messages: f.Messages, recipients: f.Recipients}
		r.sel = b.selector(f.Pos, selFile{f.Listeners, f.TLS, f.Authenticated, f.Users, f.Groups, f.Networks, f.TrustedNetwork})
		r.conds = r.sel.conds()
		ok := true
		switch f.Per {
		case "user":
			r.per = perUser
		case "client_ip":
			r.per = perClientIP
		case "":
			b.errf(f.Pos, "per", "is required: user or client_ip")
			ok = false
		default:
			b.errf(f.Pos, "per", "%q is not user or client_ip", f.Per)
			ok = false
		}
		if f.Window < time.Second || f.Window > 7*24*time.Hour {
			b.errf(f.Pos, "window", "is required, between 1s and 168h, e.g. \"1h\"")
			ok = false
		}
		if f.Messages < 0 || f.Recipients < 0 || f.Messages+f.Recipients == 0 {
			b.errf(f.Pos, "name", "counts nothing: set messages or recipients (a positive number per window)")
			ok = false
		}
		if ok {
			b.p.rates = append(b.p.rates, r)
		}
	}
}

// Warnings returns things in the policy that are legal but probably not
// meant, for "policy check": groups no entry refers to.
func (p *Policy) Warnings() []string {
	return p.warnings
}

// nameEntry is a string list item with its line.
type nameEntry struct {
	name string
	line int
}

// UnmarshalYAMLX implements yamlx.Unmarshaler.
func (e *nameEntry) UnmarshalYAMLX(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!str" && n.Tag != "!!int") || n.Value == "" {
		return fmt.Errorf("must be a name, not %s", describe(n))
	}
	e.name, e.line = n.Value, n.Line
	return nil
}

// patternEntry is an address pattern in a rule, with its line.
type patternEntry struct {
	p    *Pattern
	line int
}

// UnmarshalYAMLX implements yamlx.Unmarshaler.
func (e *patternEntry) UnmarshalYAMLX(n *yaml.Node) error {
	return e.decode(n, false)
}

func (e *patternEntry) decode(n *yaml.Node, allowUser bool) error {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return fmt.Errorf(`must be an address pattern such as "*@example.org", not %s`, describe(n))
	}
	p, err := parsePattern(n.Value, allowUser)
	if err != nil {
		return err
	}
	e.p, e.line = p, n.Line
	return nil
}

// grantPattern is an address pattern in may_send_as, where {user} is allowed.
type grantPattern struct{ patternEntry }

// UnmarshalYAMLX implements yamlx.Unmarshaler.
func (e *grantPattern) UnmarshalYAMLX(n *yaml.Node) error {
	return e.decode(n, true)
}

// describe names what a node holds, for an error message.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("%s %q", strings.TrimPrefix(n.Tag, "!!"), n.Value)
	}
	return "this"
}

// hintWildcardQuoting explains YAML's errors for an unquoted *.example.org,
// which YAML reads as an alias (a reference to an "&anchor").
func hintWildcardQuoting(errs yamlx.Errors) {
	for _, e := range errs {
		if strings.Contains(e.Msg, "unknown anchor") || strings.Contains(e.Msg, "did not find expected alphabetic or numeric character") {
			e.Msg += ` (a wildcard domain must be quoted: "*.example.org"; so must a pattern: "*@example.org")`
		}
	}
}

func knownGroups(names []string) string {
	if len(names) == 0 {
		return "no groups are defined; add them under groups:"
	}
	return "groups: " + strings.Join(names, ", ")
}
