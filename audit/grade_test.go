package audit

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestAuditParsePorts(t *testing.T) {
	for spec, want := range map[string]string{
		"":                          "smtp/25 submission/587 smtps/465 imap/143 imaps/993 pop3/110 pop3s/995",
		"all":                       "smtp/25 submission/587 smtps/465 imap/143 imaps/993 pop3/110 pop3s/995",
		"none":                      "",
		"25,587":                    "smtp/25 submission/587",
		"587, 25":                   "smtp/25 submission/587",
		"imap":                      "imap/143",
		"smtp=2525,submission=2587": "smtp/2525 submission/2587",
		"submissions=2465,pop=2110": "smtps/2465 pop3/2110",
		"IMAPS=2993,995":            "imaps/2993 pop3s/995",
		"smtp=2525,submission=2525": "smtp/2525 submission/2525",
	} {
		svcs, err := ParsePorts(spec)
		if err != nil {
			t.Errorf("ParsePorts(%q): %v", spec, err)
			continue
		}
		var got []string
		for _, s := range svcs {
			got = append(got, s.String())
		}
		if strings.Join(got, " ") != want {
			t.Errorf("ParsePorts(%q) = %v, want %s", spec, got, want)
		}
	}
	for _, bad := range []string{"2525", "smtp=0", "smtp=70000", "smtp=x", "gopher=70", "smtp=25,smtp=26", ","} {
		if _, err := ParsePorts(bad); err == nil {
			t.Errorf("ParsePorts(%q) accepted", bad)
		}
	}
}

func TestAuditRelayProbesNeverLookLocalWithoutTrick(t *testing.T) {
	ps := relayProbes("a@example.org", "t@example.net", "mail.test", "[192.0.2.1]")
	want := map[string]string{
		"external sender":   "t@example.net",
		"local sender":      "t@example.net",
		"percent hack":      "t%example.net@mail.test",
		"bang path":         "example.net!t@mail.test",
		"quoted local part": `"t@example.net"@mail.test`,
		"source route":      "@mail.test:t@example.net",
		"two @":             "t@example.net@mail.test",
		"IP literal":        "t%example.net@[192.0.2.1]",
	}
	if len(ps) != len(want) {
		t.Fatalf("%d probes, want %d", len(ps), len(want))
	}
	for _, p := range ps {
		if want[p.Name] != p.To {
			t.Errorf("%s: RCPT TO:<%s>, want <%s>", p.Name, p.To, want[p.Name])
		}
		if strings.ContainsAny(p.To, "\r\n") {
			t.Errorf("%s: line break in address", p.Name)
		}
	}
	if ps[1].From != "postmaster@mail.test" {
		t.Errorf("local sender probe sends MAIL FROM:<%s>", ps[1].From)
	}
	// A host given as an IP: no duplicate IP-literal probe.
	if n := len(relayProbes("a@example.org", "t@example.net", "[192.0.2.1]", "[192.0.2.1]")); n != len(want)-1 {
		t.Errorf("%d probes for an IP-literal local domain, want %d", n, len(want)-1)
	}
}

func TestAuditSummarizeRelay(t *testing.T) {
	svc := Service{Name: "smtp", Port: 25, Kind: SMTP}
	plain := relayProbe{Name: "external sender", From: "a@x.example", To: "b@y.example"}
	trick := relayProbe{Name: "percent hack", To: "b%y.example@local.example", Trick: true}
	refused := func(p relayProbe) relayResult {
		return relayResult{probe: p, mailOK: true, reply: "550 5.7.1 Relaying denied"}
	}
	accepted := func(p relayProbe) relayResult {
		return relayResult{probe: p, mailOK: true, accepted: true, reply: "250 2.1.5 Ok"}
	}
	mailRefused := func(p relayProbe) relayResult {
		return relayResult{probe: p, reply: "MAIL 530 5.7.0 Must issue a STARTTLS command first"}
	}
	cases := []struct {
		name    string
		results []relayResult
		tricks  bool
		want    Grade
	}{
		{"plain refused", []relayResult{refused(plain), accepted(trick)}, false, OK},
		{"plain accepted", []relayResult{accepted(plain), refused(trick)}, false, Fail},
		{"trick accepted", []relayResult{refused(plain), accepted(trick)}, true, Fail},
		{"trick refused", []relayResult{accepted(plain), refused(trick)}, true, OK},
		{"mail refused", []relayResult{mailRefused(plain)}, false, Warning},
		{"connection lost", []relayResult{{probe: plain, err: errors.New("EOF")}}, false, Warning},
	}
	for _, c := range cases {
		f := summarizeRelay(svc, c.results, c.tricks)
		if f.Grade != c.want {
			t.Errorf("%s: %s %q, want %s", c.name, f.Grade, f.Detail, c.want)
		}
		if f.Grade == Fail && !strings.Contains(f.Detail, "250 2.1.5") {
			t.Errorf("%s: fail detail does not quote the server: %q", c.name, f.Detail)
		}
	}
}

func TestAuditReportFailedAndOutput(t *testing.T) {
	r := &Report{Host: "mx.example", Address: "192.0.2.1", Findings: []Finding{
		{Grade: OK, Check: "smtp/25 starttls", Detail: "offered"},
		{Grade: Warning, Check: "spf", Detail: "v=spf1 ~all", Advice: "use -all"},
		{Grade: Info, Check: "imap/143 port", Detail: "closed (connection refused)"},
	}}
	if r.Failed() {
		t.Error("Failed() with no fail finding")
	}
	var text bytes.Buffer
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"OK", "smtp/25 starttls", "WARNING", "→ use -all", "closed", "PASS: 1 ok, 1 warning, 0 fail, 1 info"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
	r.Findings = append(r.Findings, Finding{Grade: Fail, Check: "smtp/25 open relay", Detail: "RCPT accepted\nfor all"})
	if !r.Failed() {
		t.Error("Failed() false with a fail finding")
	}
	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Findings) != 4 || back.Findings[3].Grade != Fail || !back.Failed() {
		t.Errorf("JSON round trip lost findings: %+v", back.Findings)
	}
	text.Reset()
	r.WriteText(&text)
	if !strings.Contains(text.String(), "RCPT accepted for all") || !strings.Contains(text.String(), "FAIL:") {
		t.Errorf("multi-line detail not flattened or verdict wrong:\n%s", text.String())
	}
}

func TestAuditIsTopLabel(t *testing.T) {
	for l, want := range map[string]bool{"org": true, "xn--p1ai": true, "123": false, "a1": true, "-a": false, "a-": false, "": false, "a_b": false} {
		if isTopLabel(l) != want {
			t.Errorf("isTopLabel(%q) = %v", l, !want)
		}
	}
}

func TestAuditSuiteClasses(t *testing.T) {
	for id, want := range map[uint16]string{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256:     "modern",
		tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256: "modern",
		tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA:          "legacy",
		tls.TLS_RSA_WITH_AES_128_GCM_SHA256:             "legacy", // no forward secrecy
		tls.TLS_RSA_WITH_3DES_EDE_CBC_SHA:               "broken",
		tls.TLS_ECDHE_RSA_WITH_RC4_128_SHA:              "broken",
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256:     "legacy",
	} {
		got := "legacy"
		switch {
		case isModernSuite(id):
			got = "modern"
		case isBrokenSuite(id):
			got = "broken"
		}
		if got != want {
			t.Errorf("%s: %s, want %s", tls.CipherSuiteName(id), got, want)
		}
	}
}
