package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/tlsguard/tlsguard/policy/yamlx"
)

// policyFile is the YAML model of a policy file. Later sections (groups,
// rules, limits, rate_limits) are added here as fields with their own types.
type policyFile struct {
	LocalDomains    []domainEntry  `yaml:"local_domains"`
	TrustedNetworks []networkEntry `yaml:"trusted_networks"`
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
	p := &Policy{
		file: file,
		local: domainSet{
			exact: make(map[string]struct{}),
			wild:  make(map[string]struct{}),
		},
	}

	seenDomain := map[DomainPattern]int{} // pattern -> index of first entry
	for i, e := range f.LocalDomains {
		if e.Domain == "" {
			continue // invalid; already reported
		}
		if j, dup := seenDomain[e.DomainPattern]; dup {
			errs = append(errs, &yamlx.Error{File: file, Line: e.line, Key: fmt.Sprintf("local_domains[%d]", i),
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
		if j, dup := seenNet[e.prefix]; dup {
			errs = append(errs, &yamlx.Error{File: file, Line: e.line, Key: fmt.Sprintf("trusted_networks[%d]", i),
				Msg: fmt.Sprintf("duplicate of trusted_networks[%d] on line %d (both are %s)", j, f.TrustedNetworks[j].line, e.prefix)})
			continue
		}
		seenNet[e.prefix] = i
		p.trusted = append(p.trusted, e.prefix)
	}

	if len(errs) > 0 {
		sort.SliceStable(errs, func(i, j int) bool { return errs[i].Line < errs[j].Line })
		return nil, errs
	}
	return p, nil
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
			e.Msg += ` (a wildcard domain must be quoted: "*.example.org")`
		}
	}
}
