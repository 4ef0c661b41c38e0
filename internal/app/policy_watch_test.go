package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tlsguard/tlsguard/policy"
)

type watchEnv struct {
	path    string
	w       *policyWatcher
	applied []*policy.Policy
	logs    *observer.ObservedLogs
}

func newWatchEnv(t *testing.T, content string) *watchEnv {
	t.Helper()
	e := &watchEnv{path: filepath.Join(t.TempDir(), "policy.yaml")}
	if err := os.WriteFile(e.path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.DebugLevel)
	e.logs = logs
	e.w = newPolicyWatcher(e.path, zap.New(core), func(p *policy.Policy) { e.applied = append(e.applied, p) }, []string{"mx", "submission"})
	return e
}

// write changes the file in place and makes sure its mtime moves.
func (e *watchEnv) write(t *testing.T, content string) {
	t.Helper()
	if err := os.WriteFile(e.path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	bump(t, e.path)
}

var bumps int

func bump(t *testing.T, path string) {
	bumps++
	ts := time.Now().Add(time.Duration(bumps) * time.Second)
	if err := os.Chtimes(path, ts, ts); err != nil {
		t.Fatal(err)
	}
}

func (e *watchEnv) messages(msg string) int { return e.logs.FilterMessage(msg).Len() }

func TestPolicyWatcherReloadsAfterTheFileSettles(t *testing.T) {
	e := newWatchEnv(t, "local_domains: [a.example]\n")
	if e.w.poll() || len(e.applied) != 0 {
		t.Fatal("reloaded an unchanged file")
	}
	e.write(t, "local_domains: [b.example]\n")
	if e.w.poll() {
		t.Fatal("reloaded on first sight; must wait for the file to settle")
	}
	if !e.w.poll() || len(e.applied) != 1 {
		t.Fatal("did not reload a settled change")
	}
	if d := e.applied[0].LocalDomains(); len(d) != 1 || d[0].Domain != "b.example" {
		t.Fatalf("applied %v", d)
	}
	if e.messages("policy reloaded") != 1 {
		t.Error("no 'policy reloaded' log line")
	}
	if e.w.poll() || e.w.poll() {
		t.Fatal("reloaded again without a change")
	}

	// A change seen mid-write (it changes again before settling) waits.
	e.write(t, "local_domains: [c.exa")
	e.w.poll()
	e.write(t, "local_domains: [c.example]\n")
	if e.w.poll() {
		t.Fatal("applied a file that was still changing")
	}
	if !e.w.poll() || e.applied[len(e.applied)-1].LocalDomains()[0].Domain != "c.example" {
		t.Fatal("final version not applied")
	}
}

func TestPolicyWatcherRefusesABrokenFile(t *testing.T) {
	e := newWatchEnv(t, "local_domains: [a.example]\n")
	e.write(t, "local_domains: [a.example]\nrules:\n  - name: x\n    action: accept\n")
	e.w.poll()
	if e.w.poll() || len(e.applied) != 0 {
		t.Fatal("applied a broken policy")
	}
	refused := e.logs.FilterMessage("policy reload refused; the old one stays in force").All()
	if len(refused) != 1 || !strings.Contains(refused[0].ContextMap()["error"].(string), "policy.yaml:4: rules[0].action: this rule accepts any recipient from any client") {
		t.Fatalf("refusal log: %+v", refused)
	}
	// Not logged again while the file stays broken.
	e.w.poll()
	e.w.poll()
	if e.messages("policy reload refused; the old one stays in force") != 1 {
		t.Error("refusal logged repeatedly")
	}
	// Fixing it applies it.
	e.write(t, "local_domains: [fixed.example]\n")
	e.w.poll()
	if !e.w.poll() {
		t.Fatal("fixed file not applied")
	}
}

func TestPolicyWatcherRenameOverAndTouch(t *testing.T) {
	e := newWatchEnv(t, "local_domains: [a.example]\n")
	// touch: same content, new mtime: nothing to do.
	bump(t, e.path)
	e.w.poll()
	if e.w.poll() || len(e.applied) != 0 {
		t.Fatal("reloaded a touched but unchanged file")
	}
	// Rename over, as deploy tools do.
	tmp := e.path + ".new"
	if err := os.WriteFile(tmp, []byte("local_domains: [renamed.example]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, e.path); err != nil {
		t.Fatal(err)
	}
	e.w.poll()
	if !e.w.poll() || e.applied[0].LocalDomains()[0].Domain != "renamed.example" {
		t.Fatal("rename-over not applied")
	}
	// A deleted file keeps the policy in force and is logged once.
	os.Remove(e.path)
	e.w.poll()
	e.w.poll()
	if n := e.messages("policy file unreadable; the policy in force stays"); n != 1 {
		t.Errorf("unreadable logged %d times", n)
	}
	if len(e.applied) != 1 {
		t.Error("applied something after delete")
	}
}

func TestPolicyWatcherWarnsAboutUnknownListeners(t *testing.T) {
	e := newWatchEnv(t, "rules:\n  - name: x\n    listeners: [submision]\n    action: reject\n")
	warn := e.logs.FilterMessage("policy names a listener the config does not have; conditions on it never match").All()
	if len(warn) != 1 || warn[0].ContextMap()["listener"] != "submision" {
		t.Fatalf("warnings: %+v", warn)
	}
}

func TestPolicyWatcherFollowsANewPathAfterSIGHUP(t *testing.T) {
	e := newWatchEnv(t, "local_domains: [a.example]\n")
	other := filepath.Join(t.TempDir(), "other.yaml")
	if err := os.WriteFile(other, []byte("local_domains: [b.example]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// SIGHUP loaded the config naming other.yaml and put it in force.
	e.w.follow(other, []string{"mx"}, true)
	if e.w.poll() || e.w.poll() {
		t.Fatal("the policy SIGHUP just loaded was applied again")
	}
	e.write(t, "local_domains: [c.example]\n") // the old file no longer matters
	e.w.poll()
	if e.w.poll() {
		t.Fatal("a change of the old policy file was applied after the config moved away from it")
	}
	if err := os.WriteFile(other, []byte("local_domains: [d.example]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bump(t, other)
	e.w.poll()
	if !e.w.poll() || e.applied[len(e.applied)-1].LocalDomains()[0].Domain != "d.example" {
		t.Fatalf("a change of the new policy file was not applied: %d applied", len(e.applied))
	}
}

func TestPolicyWatcherDoesNotReapplyWhatSIGHUPLoaded(t *testing.T) {
	e := newWatchEnv(t, "local_domains: [a.example]\n")
	e.write(t, "local_domains: [b.example]\n")
	e.w.follow(e.path, nil, true) // SIGHUP came first and loaded b.example
	if e.w.poll() || e.w.poll() || len(e.applied) != 0 {
		t.Fatalf("the watcher reloaded what SIGHUP already applied (%d applied)", len(e.applied))
	}
}

func TestPolicyWatcherKeepsAPendingChangeWhenSIGHUPFailed(t *testing.T) {
	e := newWatchEnv(t, "local_domains: [a.example]\n")
	e.w.poll()
	e.write(t, "local_domains: [b.example]\n")
	e.w.poll() // seen once, waiting to settle
	// SIGHUP with a broken config: no policy loaded, the path is unchanged.
	e.w.follow(e.path, []string{"mx"}, false)
	if !e.w.poll() || e.applied[len(e.applied)-1].LocalDomains()[0].Domain != "b.example" {
		t.Fatal("the pending change was lost after a failed SIGHUP reload")
	}
}
