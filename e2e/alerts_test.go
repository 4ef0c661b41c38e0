package e2e

// The shipped monitoring: Prometheus alerts (deploy/prometheus) and the
// Grafana dashboard (deploy/grafana) are checked with promtool, and every
// metric they use must exist on a running tlsguard's /metrics, so renaming
// a metric cannot silently break them.

import (
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func runPromtool(t testing.TB, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command(requireTool(t, "promtool"), args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

type alertRules struct {
	Groups []struct {
		Rules []struct {
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

// The alerts load, their unit tests pass, each alert is shown firing in
// them, and each runbook points to a README section that exists.
func TestMonitoringAlertsPromtool(t *testing.T) {
	root := repoRoot(t)
	dir := filepath.Join(root, "deploy", "prometheus")
	runPromtool(t, dir, "check", "rules", "alerts.yaml")
	runPromtool(t, dir, "test", "rules", "alerts_test.yaml")

	var rules alertRules
	if err := yaml.Unmarshal([]byte(readFile(filepath.Join(dir, "alerts.yaml"))), &rules); err != nil {
		t.Fatal(err)
	}
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string           `yaml:"alertname"`
				ExpAlerts []map[string]any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal([]byte(readFile(filepath.Join(dir, "alerts_test.yaml"))), &tests); err != nil {
		t.Fatal(err)
	}
	fires := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, at := range tc.AlertRuleTest {
			if len(at.ExpAlerts) > 0 {
				fires[at.Alertname] = true
			}
		}
	}
	readme := anchors(t, filepath.Join(root, "README.md"))
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			n++
			if !fires[r.Alert] {
				t.Errorf("%s: no promtool test shows it firing", r.Alert)
			}
			if r.Annotations["summary"] == "" {
				t.Errorf("%s: no summary", r.Alert)
			}
			file, frag, _ := strings.Cut(r.Annotations["runbook"], "#")
			if file != "README.md" || !readme[frag] {
				t.Errorf("%s: runbook %q is not a README.md section", r.Alert, r.Annotations["runbook"])
			}
		}
	}
	if n < 10 {
		t.Errorf("only %d alerts", n)
	}
}

type dashboard struct {
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

// dashboardExprs returns every panel query with Grafana's variables
// replaced by values, as Grafana sends them to Prometheus.
func dashboardExprs(t testing.TB) []string {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal([]byte(readFile(filepath.Join(repoRoot(t), "deploy", "grafana", "tlsguard.json"))), &d); err != nil {
		t.Fatalf("deploy/grafana/tlsguard.json is not valid JSON: %v", err)
	}
	var exprs []string
	for _, p := range d.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			e := strings.NewReplacer("$__rate_interval", "5m", "$instance", ".*").Replace(tg.Expr)
			exprs = append(exprs, e)
		}
	}
	return exprs
}

// The dashboard is valid JSON and every panel's query parses: each is
// checked by promtool as the expression of a recording rule.
func TestMonitoringDashboardQueriesParse(t *testing.T) {
	exprs := dashboardExprs(t)
	var b strings.Builder
	b.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	for i, e := range exprs {
		q, _ := json.Marshal(e)
		fmt.Fprintf(&b, "      - record: dashboard:query%d\n        expr: %s\n", i, q)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "dashboard-rules.yaml"), b.String())
	out := runPromtool(t, dir, "check", "rules", "dashboard-rules.yaml")
	if !strings.Contains(out, fmt.Sprintf("SUCCESS: %d rules found", len(exprs))) {
		t.Errorf("promtool: %s", out)
	}
}

var metricName = regexp.MustCompile(`\btlsguard_[a-z_]+\b`)

// Every metric the alerts and the dashboard use exists on a running
// tlsguard after ordinary traffic: sessions, TLS, AUTH that succeeds and
// fails, a relay refusal, a delivered message, a shadow rule's decision, a
// reload, a per-IP session limit and an IMAP session with a failed login.
func TestMonitoringMetricsExist(t *testing.T) {
	t.Parallel()
	used := map[string]bool{}
	for _, m := range metricName.FindAllString(readFile(filepath.Join(repoRoot(t), "deploy", "prometheus", "alerts.yaml")), -1) {
		used[m] = true
	}
	for _, e := range dashboardExprs(t) {
		for _, m := range metricName.FindAllString(e, -1) {
			used[m] = true
		}
	}

	pf := startPostfix(t)
	admin := loopbackAddr(t)
	imaps := loopbackAddr(t)
	g := startTLSGuard(t, pf, withConfig(fmt.Sprintf("admin:\n  address: %q\nlimits:\n  max_sessions_per_ip: 1\n", admin)),
		withListeners(fmt.Sprintf("  - name: imaps\n    address: %q\n    protocol: imap\n    tls: implicit\n", imaps)),
		// The login fails at the credential source; the mailbox server is
		// never dialled.
		withConfig(fmt.Sprintf("mailbox_backend:\n  imap: %q\n", loopbackAddr(t))))
	installPolicy(t, g, shadowPolicy)
	cfg := g.PKI.clientTLS()

	c := dialImplicitTLS(t, g.Submissions, cfg)
	c.ehlo("client")
	c.authPlain("", aliceUser, "wrong").expect(t, 535)
	c.authPlain("", aliceUser, alicePass).expect(t, 235)
	transact(t, c, alice, map[string]int{carol: 250}, carol)
	c = dialSMTP(t, g.MX)
	c.ehlo("spam.test")
	transact(t, c, "promo@spam.test", map[string]int{alice: 250, carol: 550}, alice, carol)
	// A second session from the same address while one is open.
	first := dialSMTPFrom(t, "127.0.0.2", g.MX)
	second := dialSMTPRaw(t, "127.0.0.2", g.MX)
	second.expectClosedAfterReplies(2)
	first.cmd("QUIT")
	pf.WaitMessages(t, carol, 1)
	if err := waitListening(imaps, g.exited, guardStartTimeout); err != nil {
		t.Fatal(err)
	}
	m := dialMailbox(t, "127.0.0.3", imaps, true, g.PKI)
	m.line()
	m.cmd("a", "LOGIN "+aliceUser+" wrong")
	m.cmd("b", "LOGOUT")
	waitLogRecord(t, g, "mailbox session", func(logRecord) bool { return true })

	_, body := httpGet(t, "http://"+admin+"/metrics")
	var missing []string
	for m := range used {
		base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
		if !strings.Contains(body, "\n# TYPE "+base+" ") {
			missing = append(missing, m)
		}
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Errorf("metrics used by deploy/prometheus/alerts.yaml or deploy/grafana/tlsguard.json that /metrics does not have: %v", missing)
	}
	if len(used) < 15 {
		t.Errorf("only %d metric names found in the alerts and the dashboard: %v", len(used), used)
	}
}
