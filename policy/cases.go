package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/tlsguard/tlsguard/internal/yamlx"
)

// Case is one envelope of a cases file with the decision it should get;
// "tlsguard policy test" runs them, so a policy change is reviewed like
// code.
type Case struct {
	Name    string
	Source  string // file:line of the case
	Session Session
	Env     Envelope
	To      Address
	// Expect is the action wanted; Reply and Rule, if set, must match too.
	Expect Action
	Reply  string
	Rule   string
}

// casesFile is the YAML model of a cases file.
type casesFile struct {
	Cases []caseFile `yaml:"cases"`
}

type caseFile struct {
	Pos             yamlx.Pos
	Name            string `yaml:"name"`
	Listener        string `yaml:"listener"`
	TLS             bool   `yaml:"tls"`
	User            string `yaml:"user"`
	IP              string `yaml:"ip"`
	From            string `yaml:"from"`
	To              string `yaml:"to"`
	Size            int64  `yaml:"size"`
	PriorRecipients int    `yaml:"prior_recipients"`
	Expect          string `yaml:"expect"`
	Reply           string `yaml:"reply"`
	Rule            string `yaml:"rule"`
}

// LoadCases reads a cases file. Problems are yamlx.Errors naming the line.
func LoadCases(path string) ([]Case, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading cases: %w", err)
	}
	return ParseCases(path, data)
}

// ParseCases parses a cases file; file names it in errors.
func ParseCases(file string, data []byte) ([]Case, error) {
	var f casesFile
	var errs yamlx.Errors
	if err := yamlx.Decode(file, data, &f); err != nil {
		if !errors.As(err, &errs) {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		return nil, errs
	}
	if len(f.Cases) == 0 {
		return nil, yamlx.Errors{{File: file, Line: 1, Key: "cases", Msg: "no cases: add a list of envelopes with the expected decision"}}
	}
	add := func(pos yamlx.Pos, key, format string, args ...any) {
		errs = append(errs, yamlx.Errorf(pos, key, format, args...))
	}
	names := map[string]int{}
	var cs []Case
	for _, cf := range f.Cases {
		c := Case{Name: cf.Name, Source: fmt.Sprintf("%s:%d", file, cf.Pos.Line), Reply: cf.Reply, Rule: cf.Rule}
		if cf.Name == "" {
			add(cf.Pos, "name", "is required")
		} else if l, dup := names[cf.Name]; dup {
			add(cf.Pos, "name", "duplicate case name %q (first on line %d)", cf.Name, l)
		} else {
			names[cf.Name] = cf.Pos.Line
		}
		c.Session = Session{Listener: cf.Listener, TLS: cf.TLS, User: cf.User}
		if cf.IP != "" {
			ip, err := netip.ParseAddr(cf.IP)
			if err != nil {
				add(cf.Pos, "ip", "%q is not an IP address", cf.IP)
			}
			c.Session.ClientIP = ip
		}
		if _, ok := cf.Pos.Lines["from"]; !ok {
			add(cf.Pos, "from", `is required (write "<>" for the null sender)`)
		}
		from := strings.TrimSuffix(strings.TrimPrefix(cf.From, "<"), ">")
		var err error
		if c.Env.From, err = ParseAddress(from, !isASCII(from)); err != nil {
			add(cf.Pos, "from", "%q: %v", cf.From, err)
		}
		if cf.To == "" {
			add(cf.Pos, "to", "is required")
		} else if c.To, err = ParseAddress(cf.To, !isASCII(cf.To)); err != nil {
			add(cf.Pos, "to", "%q: %v", cf.To, err)
		}
		c.Env.Size, c.Env.Recipients = cf.Size, cf.PriorRecipients
		switch cf.Expect {
		case "accept":
			c.Expect = Accept
		case "reject":
			c.Expect = Reject
		case "tempfail":
			c.Expect = TempFail
		case "":
			add(cf.Pos, "expect", "is required: accept, reject or tempfail")
		default:
			add(cf.Pos, "expect", "%q is not accept, reject or tempfail", cf.Expect)
		}
		if cf.Reply != "" {
			if _, err := ParseReply(cf.Reply); err != nil && !strings.HasPrefix(cf.Reply, "250 ") {
				add(cf.Pos, "reply", "%v", err)
			}
		}
		cs = append(cs, c)
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return cs, nil
}

// CaseResult is the outcome of one case.
type CaseResult struct {
	Case Case
	Got  Decision
	// Diffs lists what differs; empty when the case passed.
	Diffs []Diff
}

// Diff is one field of a case that did not come out as expected.
type Diff struct {
	Field, Want, Got string
}

// Pass reports whether the case got what it expected.
func (r CaseResult) Pass() bool { return len(r.Diffs) == 0 }

// RunCases evaluates each case against p (with Evaluate, as the proxy
// decides) and compares.
func (p *Policy) RunCases(cs []Case) []CaseResult {
	out := make([]CaseResult, len(cs))
	for i, c := range cs {
		d := p.Evaluate(c.Session, c.Env, c.To)
		r := CaseResult{Case: c, Got: d}
		if d.Action != c.Expect {
			r.Diffs = append(r.Diffs, Diff{"expect", c.Expect.String(), d.Action.String()})
		}
		if c.Reply != "" && d.Reply.String() != c.Reply {
			r.Diffs = append(r.Diffs, Diff{"reply", c.Reply, d.Reply.String()})
		}
		if c.Rule != "" && d.Rule != c.Rule {
			r.Diffs = append(r.Diffs, Diff{"rule", c.Rule, d.Rule + " (" + d.Source + ")"})
		}
		out[i] = r
	}
	return out
}
