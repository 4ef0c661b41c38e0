package policy

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Length limits of RFC 5321 section 4.5.3.1, applied to the canonical form
// that String returns (what the backend will receive).
const (
	// MaxLocalPartLen is RFC 5321's 64-octet limit on a local part. It is
	// not enforced: VERP and SRS bounce senders exceed it, and section
	// 4.5.3.1 asks servers to avoid such limits where possible. Only
	// MaxAddressLen bounds the local part.
	MaxLocalPartLen = 64
	// MaxAddressLen is the longest mailbox in octets: a 256-octet path
	// minus its angle brackets.
	MaxAddressLen = 254

	// maxInputLen bounds the work done on a string before its canonical
	// length is known (IDNA mapping can shorten a domain).
	maxInputLen = 4 * MaxAddressLen
)

// Address is a parsed, normalised mailbox. Build it with ParseAddress; an
// Address built by hand is never more local than the parsed one would be.
type Address struct {
	// Local is the local part as the client gave it (case preserved, quotes
	// removed by go-smtp).
	Local string
	// Domain is lower-case ASCII with IDN as A-labels and no trailing dot,
	// or a canonical address literal such as "[192.0.2.1]" or
	// "[IPv6:2001:db8::1]".
	Domain string
}

// IsNull reports whether a is the null reverse-path <> (RFC 5321 section 4.5.5).
func (a Address) IsNull() bool {
	return a.Local == "" && a.Domain == ""
}

// IsLiteral reports whether the domain is an address literal ([1.2.3.4],
// [IPv6:...]). Such an address is never local.
func (a Address) IsLiteral() bool {
	return strings.HasPrefix(a.Domain, "[")
}

// Ambiguous reports whether the local part is one that a backend might route
// elsewhere: anything that is not a plain dot-string (so the client had to
// quote it: "@", quotes, backslashes, spaces, empty or doubled dots), and the
// percent hack "%" and bang paths "!" that Postfix, Sendmail and others still
// honour. A non-ASCII local part is also judged in its NFKC form, so that
// look-alikes such as a fullwidth "＠" or "％" are ambiguous too, in case a
// backend normalises them. An ambiguous address is never local; it can still
// be relayed by clients allowed to relay.
func (a Address) Ambiguous() bool {
	if ambiguousLocal(a.Local) {
		return true
	}
	return !isASCII(a.Local) && ambiguousLocal(norm.NFKC.String(a.Local))
}

func ambiguousLocal(l string) bool {
	return !isDotString(l) || strings.ContainsAny(l, "%!")
}

// String returns the canonical RFC 5321 form for forwarding, without angle
// brackets: the local part as a dot-string when it is one, otherwise as a
// quoted string with "\" before each '"' and '\' (section 4.1.2); "" for the
// null path. go-smtp unquotes it back to exactly Local + "@" + Domain, so the
// backend receives what the policy judged.
func (a Address) String() string {
	if a.IsNull() {
		return ""
	}
	return quoteLocal(a.Local) + "@" + a.Domain
}

func quoteLocal(l string) string {
	if isDotString(l) {
		return l
	}
	var b strings.Builder
	b.Grow(len(l) + 2)
	b.WriteByte('"')
	for i := 0; i < len(l); i++ {
		if l[i] == '"' || l[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(l[i])
	}
	b.WriteByte('"')
	return b.String()
}

// isDotString reports whether s is an RFC 5321 Dot-string: atoms of atext
// separated by single dots. Non-ASCII bytes count as atext (RFC 6531 section
// 3.3); ParseAddress admits them only with SMTPUTF8.
func isDotString(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' {
		return false
	}
	prevDot := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '.' {
			if prevDot {
				return false
			}
			prevDot = true
			continue
		}
		prevDot = false
		if !isAtext(c) {
			return false
		}
	}
	return true
}

// isAtext reports whether c is atext (RFC 5322 section 3.2.3) or a non-ASCII byte.
func isAtext(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c >= 0x80:
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// AddressError is the error ParseAddress returns: the SMTP reply to send and
// the reason, for the log.
type AddressError struct {
	Reply  Reply
	Reason string
}

// Error implements error.
func (e *AddressError) Error() string {
	return "invalid address: " + e.Reason
}

func syntaxError(format string, args ...any) (Address, error) {
	return Address{}, &AddressError{Reply: replyBadSyntax, Reason: fmt.Sprintf(format, args...)}
}

// ParseAddress parses the mailbox that go-smtp hands to Session.Mail and
// Session.Rcpt: angle brackets and any source route already removed, a quoted
// local part already unquoted (so `"a@b"@example.org` arrives as
// `a@b@example.org`). smtputf8 says whether the client gave the SMTPUTF8
// parameter (RFC 6531).
//
// The string is split at its last "@". The domain must be LDH labels (or
// U-labels with smtputf8, converted to A-labels) or an IPv4/IPv6 address
// literal. Control bytes are refused (553 5.1.3), as is non-ASCII without
// smtputf8 (553 5.6.7). The empty string is the null path <> and returns the
// zero Address without error; refusing it where it is not allowed (RCPT) is
// the caller's job. The error is always an *AddressError.
func ParseAddress(s string, smtputf8 bool) (Address, error) {
	if s == "" {
		return Address{}, nil
	}
	if len(s) > maxInputLen {
		return syntaxError("address is %d octets, longer than %d", len(s), MaxAddressLen)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return syntaxError("control byte 0x%02x in address", c)
		}
	}
	if !isASCII(s) {
		if !smtputf8 {
			return Address{}, &AddressError{Reply: replyNeedUTF8, Reason: "non-ASCII address without SMTPUTF8"}
		}
		if !utf8.ValidString(s) {
			return syntaxError("address is not valid UTF-8")
		}
		for _, r := range s {
			if unicode.IsControl(r) {
				return syntaxError("control character %U in address", r)
			}
		}
	}
	at := strings.LastIndexByte(s, '@')
	if at < 0 {
		return syntaxError("no @ in address")
	}
	local, domain := s[:at], s[at+1:]
	if local == "" {
		return syntaxError("empty local part")
	}
	var err error
	if strings.HasPrefix(domain, "[") {
		domain, err = normalizeLiteral(domain)
	} else {
		domain, err = normalizeDomain(domain, smtputf8)
	}
	if err != nil {
		if errors.Is(err, errNonASCII) {
			return Address{}, &AddressError{Reply: replyNeedUTF8, Reason: "non-ASCII domain without SMTPUTF8"}
		}
		return syntaxError("%v", err)
	}
	a := Address{Local: local, Domain: domain}
	if n := len(a.String()); n > MaxAddressLen {
		return syntaxError("address is %d octets, longer than %d", n, MaxAddressLen)
	}
	return a, nil
}
