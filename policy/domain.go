package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// maxDomainLen is the longest domain name in octets (RFC 1035 section 2.3.4,
// without the root label's dot).
const maxDomainLen = 253

// errNonASCII marks a domain that is not ASCII while non-ASCII is not allowed.
var errNonASCII = errors.New("non-ASCII domain")

// normalizeDomain turns a domain as written by a client or in a policy file
// into the form every comparison uses: lower-case ASCII LDH labels, IDN
// converted to A-labels with the strict IDNA lookup profile (RFC 5891
// section 5), no trailing dot. allowUnicode permits U-labels.
func normalizeDomain(d string, allowUnicode bool) (string, error) {
	if !isASCII(d) {
		if !allowUnicode {
			return "", errNonASCII
		}
		a, err := idna.Lookup.ToASCII(d)
		if err != nil {
			return "", fmt.Errorf("invalid internationalised domain: %v", err)
		}
		d = a
	}
	d = strings.ToLower(d)
	if err := checkLDH(d); err != nil {
		return "", err
	}
	if hasALabel(d) {
		// An A-label must decode to a valid U-label; re-encoding also makes
		// its spelling canonical so that both forms compare equal.
		a, err := idna.Lookup.ToASCII(d)
		if err != nil {
			return "", fmt.Errorf("invalid internationalised domain: %v", err)
		}
		if err := checkLDH(a); err != nil {
			return "", err
		}
		d = a
	}
	return d, nil
}

// checkLDH checks a lower-case ASCII domain: dot-separated labels of letters,
// digits and hyphens, 1 to 63 octets each, not starting or ending with a
// hyphen (RFC 5321 section 4.1.2 "Domain", RFC 1123 section 2.1), at most 253
// octets in all. A trailing dot (empty last label) is an error: it would make
// "example.org." and "example.org" two different strings for the same host.
// A purely numeric last label is refused too, since "user@127.0.0.1" must not
// pass for an address literal.
func checkLDH(d string) error {
	if d == "" {
		return errors.New("empty domain")
	}
	if len(d) > maxDomainLen {
		return fmt.Errorf("domain longer than %d octets", maxDomainLen)
	}
	numeric := false
	for label := range strings.SplitSeq(d, ".") {
		if label == "" {
			if strings.HasSuffix(d, ".") {
				return errors.New("domain ends with a dot")
			}
			return errors.New("empty label in domain")
		}
		if len(label) > 63 {
			return errors.New("domain label longer than 63 octets")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return errors.New("domain label starts or ends with a hyphen")
		}
		numeric = true
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= '0' && c <= '9':
			case c >= 'a' && c <= 'z', c == '-':
				numeric = false
			default:
				return fmt.Errorf("invalid character %q in domain", c)
			}
		}
	}
	if numeric {
		return errors.New("top-level label is numeric (write an IP address as [1.2.3.4])")
	}
	return nil
}

func hasALabel(d string) bool {
	return strings.HasPrefix(d, "xn--") || strings.Contains(d, ".xn--")
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// normalizeLiteral checks an address literal (RFC 5321 section 4.1.3) and
// returns its canonical form: "[192.0.2.1]" or "[IPv6:2001:db8::1]". The
// general form "[tag:content]" and IPv6 zones are refused.
func normalizeLiteral(d string) (string, error) {
	inner, ok := strings.CutPrefix(d, "[")
	if ok {
		inner, ok = strings.CutSuffix(inner, "]")
	}
	if !ok {
		return "", errors.New("malformed address literal")
	}
	if len(inner) >= 5 && strings.EqualFold(inner[:5], "IPv6:") {
		ip, err := netip.ParseAddr(inner[5:])
		if err != nil || !ip.Is6() || ip.Zone() != "" {
			return "", errors.New("invalid IPv6 address literal")
		}
		return "[IPv6:" + ip.String() + "]", nil
	}
	ip, err := netip.ParseAddr(inner)
	if err != nil || !ip.Is4() {
		return "", errors.New("invalid address literal")
	}
	return "[" + ip.String() + "]", nil
}

// domainSet answers "is this domain local?" in O(number of labels): exact
// names are one map lookup, and for wildcards each parent of the domain is
// looked up in a second map.
type domainSet struct {
	exact map[string]struct{}
	// wild holds the base of each "*.base" pattern: it matches strict
	// subdomains of base, at any depth, never base itself.
	wild map[string]struct{}
}

// contains reports whether d, a normalised domain, is in the set.
func (s *domainSet) contains(d string) bool {
	if _, ok := s.exact[d]; ok {
		return true
	}
	if len(s.wild) == 0 {
		return false
	}
	for rest := d; ; {
		i := strings.IndexByte(rest, '.')
		if i < 0 {
			return false
		}
		rest = rest[i+1:]
		if _, ok := s.wild[rest]; ok {
			return true
		}
	}
}

// DomainPattern is a domain as written in a policy file, normalised: either
// an exact domain ("example.org") or, with Wildcard set, every strict
// subdomain of Domain ("*.example.org" matches a.example.org and
// a.b.example.org, not example.org).
type DomainPattern struct {
	// Domain is lower-case ASCII, IDN as A-labels, no trailing dot.
	Domain string
	// Wildcard makes the pattern match subdomains of Domain only.
	Wildcard bool
}

// String returns the pattern in policy-file form.
func (p DomainPattern) String() string {
	if p.Wildcard {
		return "*." + p.Domain
	}
	return p.Domain
}

// ParseDomainPattern parses "example.org", "bücher.example" or
// "*.example.org". A wildcard must cover at least a two-label domain: "*.org"
// would make a whole top-level domain local, which is an open relay.
func ParseDomainPattern(s string) (DomainPattern, error) {
	base, wild := strings.CutPrefix(s, "*.")
	if strings.Contains(base, "*") {
		return DomainPattern{}, fmt.Errorf("%q: a wildcard is allowed only as a leading \"*.\", as in \"*.example.org\"", s)
	}
	if strings.HasPrefix(base, "[") {
		return DomainPattern{}, fmt.Errorf("%q: address literals are never local domains", s)
	}
	d, err := normalizeDomain(base, true)
	if err != nil {
		return DomainPattern{}, fmt.Errorf("%q is not a valid domain: %w", s, err)
	}
	if wild && !strings.Contains(d, ".") {
		return DomainPattern{}, fmt.Errorf("%q: a wildcard over a top-level domain would make every domain under it local", s)
	}
	return DomainPattern{Domain: d, Wildcard: wild}, nil
}
