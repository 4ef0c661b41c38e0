package audit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/miekg/dns"
	"golang.org/x/net/publicsuffix"
)

// checkDomain checks the mail domain's SPF, DMARC and MX records.
func (a *auditor) checkDomain(ctx context.Context, domain string) []Finding {
	return []Finding{
		CheckSPF(ctx, domain, a.res.txt),
		CheckDMARC(ctx, domain, a.res.txt),
		a.checkMX(ctx, domain),
	}
}

// IsDMARCRecord reports whether a TXT record is a DMARC record: its first
// tag is v=DMARC1 (RFC 7489 6.4).
func IsDMARCRecord(txt string) bool {
	first, _, _ := strings.Cut(txt, ";")
	k, v, ok := strings.Cut(first, "=")
	return ok && strings.TrimSpace(k) == "v" && strings.TrimSpace(v) == "DMARC1"
}

// ParseDMARC returns the tags of a DMARC record, lower-case names, and an
// error when the record is unusable: no v=DMARC1 first, or no valid p=.
func ParseDMARC(txt string) (map[string]string, error) {
	if !IsDMARCRecord(txt) {
		return nil, fmt.Errorf("%q does not start with v=DMARC1", txt)
	}
	tags := map[string]string{}
	for _, part := range strings.Split(txt, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("tag %q has no value", part)
		}
		tags[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	switch strings.ToLower(tags["p"]) {
	case "none", "quarantine", "reject":
	case "":
		return tags, fmt.Errorf("no p= tag (required, RFC 7489 6.3)")
	default:
		return tags, fmt.Errorf("p=%s is not none, quarantine or reject", tags["p"])
	}
	return tags, nil
}

// CheckDMARC grades the DMARC record that applies to domain: the one at
// _dmarc.domain, else at the organizational domain (RFC 7489 6.6.3, via the
// public suffix list). None, several or a broken one fail; p=none is a
// warning; quarantine and reject are good.
func CheckDMARC(ctx context.Context, domain string, lookup txtLookup) Finding {
	f := Finding{Check: "dmarc"}
	names := []string{"_dmarc." + domain}
	org, err := publicsuffix.EffectiveTLDPlusOne(domain)
	sub := err == nil && org != domain
	if sub {
		names = append(names, "_dmarc."+org)
	}
	var recs []string
	at := ""
	for _, n := range names {
		txts, err := lookup(ctx, n)
		if err != nil {
			f.Grade, f.Detail = Warning, err.Error()
			f.Advice = "the DMARC record could not be read; check the resolver and rerun"
			return f
		}
		for _, t := range txts {
			if IsDMARCRecord(t) {
				recs = append(recs, t)
			}
		}
		if len(recs) > 0 {
			at = n
			break
		}
	}
	switch {
	case len(recs) == 0:
		f.Grade, f.Detail = Fail, "no DMARC record at "+strings.Join(names, " or ")
		f.Advice = `publish "v=DMARC1; p=quarantine; rua=mailto:..." at _dmarc.` + domain + " and move to p=reject"
		return f
	case len(recs) > 1:
		f.Grade, f.Detail = Fail, fmt.Sprintf("%d DMARC records at %s: receivers ignore them all (RFC 7489 6.6.3)", len(recs), at)
		f.Advice = "keep a single v=DMARC1 record"
		return f
	}
	tags, err := ParseDMARC(recs[0])
	if err != nil {
		f.Grade, f.Detail = Fail, at+": "+err.Error()
		f.Advice = "fix the record: v=DMARC1 first, then p=none|quarantine|reject"
		return f
	}
	policy := strings.ToLower(tags["p"])
	if sub && at != names[0] && tags["sp"] != "" {
		policy = strings.ToLower(tags["sp"])
	}
	f.Detail = at + ": " + recs[0]
	switch policy {
	case "none":
		f.Grade = Warning
		f.Advice = "p=none only reports; move to p=quarantine, then p=reject"
	default:
		f.Grade = OK
	}
	if pct, err := strconv.Atoi(tags["pct"]); err == nil && pct < 100 && policy != "none" {
		f.Grade = Warning
		f.Detail += fmt.Sprintf(" (policy applies to %d%% of failing mail)", pct)
		f.Advice = "raise pct to 100 (or drop it)"
	}
	return f
}

// checkMX lists the domain's MX hosts, flags hosts that do not resolve, and
// says whether the audited host is one of them.
func (a *auditor) checkMX(ctx context.Context, domain string) Finding {
	f := Finding{Check: "mx"}
	mxs, err := a.res.mx(ctx, domain)
	if errors.Is(err, errNXDomain) {
		f.Grade, f.Detail = Fail, domain+" does not exist in DNS (NXDOMAIN)"
		f.Advice = "check the --domain spelling, or publish the domain's records"
		return f
	}
	if err != nil {
		f.Grade, f.Detail = Warning, err.Error()
		f.Advice = "the MX records could not be read; check the resolver and rerun"
		return f
	}
	if len(mxs) == 0 {
		f.Grade, f.Detail = Warning, "no MX record: senders fall back to the A/AAAA record of "+domain
		f.Advice = "publish MX records naming your mail hosts (or a null MX, RFC 7505, if the domain takes no mail)"
		return f
	}
	slices.SortStableFunc(mxs, func(x, y *dns.MX) int { return int(x.Preference) - int(y.Preference) })
	if len(mxs) == 1 && mxs[0].Mx == "." {
		f.Grade, f.Detail = Info, "null MX (RFC 7505): "+domain+" accepts no mail"
		return f
	}
	var hosts, broken []string
	self := false
	for _, m := range mxs {
		h := strings.TrimSuffix(m.Mx, ".")
		hosts = append(hosts, fmt.Sprintf("%d %s", m.Preference, h))
		addrs, err := a.res.addrs(ctx, h)
		if err != nil || len(addrs) == 0 {
			broken = append(broken, h)
		}
		if strings.EqualFold(h, strings.TrimSuffix(a.cfg.Host, ".")) || slices.Contains(addrs, a.addr) {
			self = true
		}
	}
	f.Grade, f.Detail = OK, "MX "+strings.Join(hosts, ", ")
	if !self {
		f.Detail += "; the audited host is not among them"
	}
	if len(broken) > 0 {
		f.Grade = Fail
		f.Detail += "; no address for " + strings.Join(broken, ", ")
		f.Advice = "every MX host must have an A or AAAA record"
	}
	return f
}
