package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/tlsguard/tlsguard/policy"
	"github.com/tlsguard/tlsguard/policy/replay"
)

// policyReplay is "tlsguard policy replay": the work is in policy/replay.
func policyReplay(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("policy replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cand := fs.String("policy", "", "the candidate policy file")
	cur := fs.String("current", "", "compare with this policy instead of the decisions in the log")
	since := fs.Duration("since", 0, "only transactions logged within this long before now, e.g. 168h")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	maxGroups := fs.Int("max-groups", 1000, "groups kept per table; the rest are counted as other")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cand == "" || fs.NArg() == 0 || *since < 0 || *maxGroups < 1 {
		fmt.Fprint(stderr, "policy replay: --policy and at least one LOG (- for stdin) are required\n\n", policyUsage)
		return 2
	}
	load := func(file string) *policy.Policy {
		p, err := policy.Load(file)
		if err != nil {
			printLoadError(stderr, err)
			return nil
		}
		return p
	}
	o := replay.Options{Candidate: load(*cand), MaxGroups: *maxGroups}
	if o.Candidate == nil {
		return 2
	}
	if *cur != "" {
		if o.Current = load(*cur); o.Current == nil {
			return 2
		}
	}
	if *since > 0 {
		o.Since = time.Now().Add(-*since)
	}
	r := replay.New(o)
	for _, name := range fs.Args() {
		var err error
		if name == "-" {
			err = r.Read("-", stdin)
		} else {
			var f *os.File
			if f, err = os.Open(name); err == nil {
				err = r.Read(name, f)
				f.Close()
			}
		}
		if err != nil {
			fmt.Fprintf(stderr, "policy replay: %v\n", err)
			return 2
		}
	}
	rep := r.Report()
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(&rep); err != nil {
			fmt.Fprintf(stderr, "policy replay: %v\n", err)
			return 2
		}
	} else {
		rep.WriteText(stdout, 20)
	}
	if rep.Changed() {
		return 1
	}
	return 0
}
