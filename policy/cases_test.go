package policy_test

import (
	"strings"
	"testing"

	"github.com/tlsguard/tlsguard/policy"
)

func TestParseCasesErrors(t *testing.T) {
	cases := []struct{ src, want string }{
		{"", "c.yaml:1: cases: no cases"},
		{"cases:\n  - name: a\n    from: x@y.org\n    to: a@b.org\n    expect: maybe\n", `c.yaml:5: cases[0].expect: "maybe" is not accept, reject or tempfail`},
		{"cases:\n  - name: a\n    to: a@b.org\n    expect: accept\n", `c.yaml:2: cases[0].from: is required`},
		{"cases:\n  - name: a\n    from: x@y.org\n    expect: accept\n", `c.yaml:2: cases[0].to: is required`},
		{"cases:\n  - name: a\n    from: x@y.org\n    to: \"a@b.org.\"\n    expect: accept\n", `c.yaml:4: cases[0].to: "a@b.org.": invalid address`},
		{"cases:\n  - name: a\n    from: x@y.org\n    to: a@b.org\n    ip: 1.2.3\n    expect: accept\n", `c.yaml:5: cases[0].ip: "1.2.3" is not an IP address`},
		{"cases:\n  - name: a\n    from: x@y.org\n    to: a@b.org\n    expect: accept\n    rcpt: x\n", `c.yaml:6: cases[0].rcpt: unknown key`},
		{"cases:\n  - name: a\n    from: x@y.org\n    to: a@b.org\n    expect: reject\n    reply: \"5.7.1 no\"\n", `c.yaml:6: cases[0].reply:`},
		{"cases:\n  - name: a\n    from: x@y.org\n    to: a@b.org\n    expect: accept\n  - name: a\n    from: x@y.org\n    to: a@b.org\n    expect: accept\n", `c.yaml:6: cases[1].name: duplicate case name "a" (first on line 2)`},
	}
	for _, tc := range cases {
		_, err := policy.ParseCases("c.yaml", []byte(tc.src))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want %q", tc.src, err, tc.want)
		}
	}
}

func TestRunCases(t *testing.T) {
	p := mustParse(t, "local_domains: [example.org]\n")
	cs, err := policy.ParseCases("c.yaml", []byte(`cases:
  - name: local
    from: "<>"
    to: a@example.org
    expect: accept
    rule: local_domains
  - name: wrong
    from: x@foreign.test
    to: a@foreign.test
    expect: accept
    reply: "250 2.1.5 Ok"
    rule: authenticated
`))
	if err != nil {
		t.Fatal(err)
	}
	rs := p.RunCases(cs)
	if !rs[0].Pass() || rs[1].Pass() || len(rs[1].Diffs) != 3 {
		t.Fatalf("%+v", rs)
	}
	want := []policy.Diff{
		{"expect", "accept", "reject"},
		{"reply", "250 2.1.5 Ok", "550 5.7.1 Relaying denied. Authentication required."},
		{"rule", "authenticated", "default (c.yaml)"},
	}
	for i, d := range rs[1].Diffs {
		if want[i].Field != d.Field || want[i].Want != d.Want || (d.Field != "rule" && want[i].Got != d.Got) {
			t.Errorf("diff %d: %+v, want %+v", i, d, want[i])
		}
	}
	if rs[1].Case.Source != "c.yaml:7" {
		t.Errorf("source %q", rs[1].Case.Source)
	}
}
