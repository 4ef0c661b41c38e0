package audit

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Grade says how a finding counts.
type Grade string

// Grades, from good to bad. Only Fail makes Report.Failed true.
const (
	// OK: the check passed.
	OK Grade = "ok"
	// Info: a fact worth showing that is neither good nor bad (a closed
	// port, the MX hosts, a check the auditor cannot do).
	Info Grade = "info"
	// Warning: weaker than it should be, but not an open door.
	Warning Grade = "warning"
	// Fail: a problem an attacker can use; the exit code is non-zero.
	Fail Grade = "fail"
)

// Finding is one line of the report.
type Finding struct {
	// Grade is ok, info, warning or fail.
	Grade Grade `json:"grade"`
	// Check names what was checked, prefixed by the service and port for
	// port checks: "submission/587 starttls", "spf".
	Check string `json:"check"`
	// Service and Port say which endpoint the finding is about; empty for
	// host and DNS findings.
	Service string `json:"service,omitempty"`
	Port    int    `json:"port,omitempty"`
	// Detail is what was observed, quoting the server where useful.
	Detail string `json:"detail"`
	// Advice is one line on what to do; empty when nothing needs doing.
	Advice string `json:"advice,omitempty"`

	closed bool // the port did not answer; set only on a port's sole finding
}

// Report is the result of one audit.
type Report struct {
	// Host is the host as given; Address is the address audited.
	Host    string `json:"host"`
	Address string `json:"address"`
	// Domain is the mail domain checked, if any.
	Domain string `json:"domain,omitempty"`
	// Started and Duration time the audit.
	Started  time.Time     `json:"started"`
	Duration time.Duration `json:"duration_ns"`
	// Findings in a stable order: host, each port in turn, then DNS.
	Findings []Finding `json:"findings"`
}

// Failed reports whether any finding is graded Fail.
func (r *Report) Failed() bool {
	for _, f := range r.Findings {
		if f.Grade == Fail {
			return true
		}
	}
	return false
}

// Count returns how many findings have grade g.
func (r *Report) Count(g Grade) int {
	n := 0
	for _, f := range r.Findings {
		if f.Grade == g {
			n++
		}
	}
	return n
}

// WriteJSON writes the report as one indented JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("writing audit report: %w", err)
	}
	return nil
}

// WriteText writes the report as a table for people: grade, check, detail,
// and the advice on its own indented line under any finding that has one.
func (r *Report) WriteText(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "GRADE\tCHECK\tDETAIL\n")
	for _, f := range r.Findings {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", strings.ToUpper(string(f.Grade)), f.Check, oneLine(f.Detail))
		if f.Advice != "" && f.Grade != OK {
			fmt.Fprintf(tw, "\t\t  → %s\n", oneLine(f.Advice))
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("writing audit report: %w", err)
	}
	verdict := "PASS"
	if r.Failed() {
		verdict = "FAIL"
	}
	_, err := fmt.Fprintf(w, "\n%s: %d ok, %d warning, %d fail, %d info (%s, %s in %s)\n",
		verdict, r.Count(OK), r.Count(Warning), r.Count(Fail), r.Count(Info), r.Host, r.Address, r.Duration)
	if err != nil {
		return fmt.Errorf("writing audit report: %w", err)
	}
	return nil
}

// oneLine flattens a multi-line server reply for the table.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
