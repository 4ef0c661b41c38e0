package replay_test

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tlsguard/tlsguard/policy"
	"github.com/tlsguard/tlsguard/policy/replay"
)

const testPolicy = `local_domains: [example.org]
trusted_networks: [10.0.0.0/8]
rules:
  - name: blocked
    senders: ["*@spam.test"]
    action: reject
  - name: local
    local_recipient: true
    action: accept
  - name: relay
    action: require_auth
limits:
  - name: three
    max_recipients: 3
`

func mustPolicy(t testing.TB, name, src string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse(name, []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// txLine is a transaction line as proxy/log.go writes it.
func txLine(ts, listener, ip, user, from string, rcpts, rules []string, refused string) string {
	q := func(xs []string) string {
		if len(xs) == 0 {
			return "[]"
		}
		return `["` + strings.Join(xs, `","`) + `"]`
	}
	return fmt.Sprintf(`{"level":"info","ts":%q,"logger":"proxy","msg":"transaction","session":"x","listener":%q,"client_ip":%q,"tls":true,"user":%q,"from":%q,"size":0,"rcpts":%s,"rules":%s,"refused":[%s],"delivered":true,"result":"250 ok","bytes":10,"duration_ms":1}`,
		ts, listener, ip, user, from, q(rcpts), q(rules), refused) + "\n"
}

func run(t testing.TB, o replay.Options, name, log string) replay.Report {
	t.Helper()
	r := replay.New(o)
	if err := r.Read(name, strings.NewReader(log)); err != nil {
		t.Fatal(err)
	}
	return r.Report()
}

// Each kind of recorded decision is judged as the proxy judged it; rate
// limit refusals are not simulated, syntax refusals are no policy decision,
// a backend refusal was a policy accept, and the recipient limit sees the
// recipients accepted before.
func TestReplayRecordedChecks(t *testing.T) {
	log := txLine("2026-12-01T10:00:00.000Z", "mx", "192.0.2.1", "", "a@foreign.test",
		[]string{"x@example.org", "y@example.org", "z@example.org"}, []string{"local", "local", "local"},
		`{"rcpt":"w@example.org","rule":"three","reply":"452 4.5.3 Too many recipients","check":"limit","before":3},`+
			`{"rcpt":"bad","rule":"syntax","reply":"553 5.1.3 bad","check":"syntax","before":3},`+
			`{"rcpt":"v@example.org","rule":"r","reply":"450 4.7.1 Rate limit","check":"rate_limit","before":3},`+
			`{"rcpt":"nobody@example.org","rule":"local","reply":"550 5.1.1 unknown","check":"backend","before":3},`+
			`{"rcpt":"c@foreign.test","rule":"relay","reply":"550 5.7.1 Relaying denied. Authentication required.","check":"rules","before":3}`)
	p := mustPolicy(t, "p.yaml", testPolicy)
	rep := run(t, replay.Options{Candidate: p}, "a.log", log)
	if rep.Decisions != 6 || rep.Outcomes[replay.Unchanged] != 5 || rep.NotSimulated != 1 || rep.SyntaxRefusals != 1 {
		t.Errorf("report %+v", rep)
	}
	// nobody@example.org was policy-accepted with 3 before: the limit
	// refuses it on replay (the proxy's own order: limit before backend).
	if rep.Outcomes[replay.NewlyRefused] != 1 || rep.ByRule[0].Rule != "local -> three" {
		t.Errorf("outcomes %v, groups %+v", rep.Outcomes, rep.ByRule)
	}
}

// Unparsable, truncated and overlong lines are counted and listed with
// file:line; reading goes on.
func TestReplayBadLines(t *testing.T) {
	good := txLine("2026-12-01T10:00:00.000Z", "mx", "192.0.2.1", "", "a@foreign.test", []string{"x@example.org"}, []string{"local"}, "")
	log := "garbage\n" + good + good[:50] + "\n" + `{"msg":"session"}` + "\n" + strings.Repeat("x", len(good)+50) + "\n" + good
	rep := run(t, replay.Options{Candidate: mustPolicy(t, "p.yaml", testPolicy), MaxLineBytes: len(good) + 10}, "a.log", log)
	if rep.Transactions != 2 || rep.BadLines != 3 {
		t.Fatalf("report %+v", rep)
	}
	for i, want := range []string{"a.log:1", "a.log:3", "a.log:5"} {
		if rep.BadLinesSeen[i].Where != want {
			t.Errorf("bad line %d at %s, want %s", i, rep.BadLinesSeen[i].Where, want)
		}
	}
}

// Group tables are bounded; what does not fit is counted as other.
func TestReplayGroupsBounded(t *testing.T) {
	var b strings.Builder
	for i := range 50 {
		b.WriteString(txLine("2026-12-01T10:00:00.000Z", "mx", fmt.Sprintf("10.%d.0.1", i), "", fmt.Sprintf("a@d%d.test", i),
			[]string{"c@foreign.test"}, []string{"relay"}, ""))
	}
	// The candidate trusts nobody: 50 newly refused, in 50 envelope groups.
	cand := mustPolicy(t, "c.yaml", strings.Replace(testPolicy, "trusted_networks: [10.0.0.0/8]", "trusted_networks: []", 1))
	rep := run(t, replay.Options{Candidate: cand, MaxGroups: 10}, "a.log", b.String())
	if rep.Outcomes[replay.NewlyRefused] != 50 || len(rep.ByEnvelope) != 10 || rep.OtherByEnvelope != 40 || len(rep.ByRule) != 1 || rep.ByRule[0].Count != 50 {
		t.Errorf("outcomes %v, %d groups, other %d, by rule %+v", rep.Outcomes, len(rep.ByEnvelope), rep.OtherByEnvelope, rep.ByRule)
	}
}

// --since skips older transactions; gzip is recognised by content.
func TestReplaySinceAndGzip(t *testing.T) {
	log := txLine("2026-12-01T10:00:00.000Z", "mx", "192.0.2.1", "", "a@spam.test", []string{"x@example.org"}, []string{"local"}, "") +
		txLine("2026-12-03T10:00:00.000Z", "mx", "192.0.2.1", "", "b@spam.test", []string{"x@example.org"}, []string{"local"}, "")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(log))
	zw.Close()
	r := replay.New(replay.Options{Candidate: mustPolicy(t, "p.yaml", testPolicy), Since: time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)})
	if err := r.Read("a.log.gz", &gz); err != nil {
		t.Fatal(err)
	}
	rep := r.Report()
	if rep.Transactions != 1 || rep.SkippedOld != 1 || rep.Outcomes[replay.NewlyRefused] != 1 || rep.ByRule[0].Example.From != "b@spam.test" {
		t.Errorf("report %+v", rep)
	}
}

// BenchmarkReplay replays a generated log of REPLAY_BENCH_MB megabytes (8
// by default) and reports lines/s; bench/replay.sh measures peak RSS on
// the binary.
func BenchmarkReplay(b *testing.B) {
	mb := 8
	if s := os.Getenv("REPLAY_BENCH_MB"); s != "" {
		fmt.Sscan(s, &mb)
	}
	var log bytes.Buffer
	lines := 0
	for i := 0; log.Len() < mb<<20; i++ {
		log.WriteString(txLine(time.Date(2026, 12, 1, 0, 0, i, 0, time.UTC).Format("2006-01-02T15:04:05.000Z0700"), "mx",
			fmt.Sprintf("10.%d.%d.1", i%7, i%200), "", fmt.Sprintf("a%d@d%d.test", i, i%300),
			[]string{"c@foreign.test", "x@example.org"}, []string{"relay", "local"},
			`{"rcpt":"d@foreign.test","rule":"three","reply":"452 4.5.3 Too many","check":"limit","before":2}`))
		lines++
	}
	dir := b.TempDir()
	path := filepath.Join(dir, "p.yaml")
	os.WriteFile(path, []byte(strings.Replace(testPolicy, "10.0.0.0/8", "10.1.0.0/16", 1)), 0o644)
	cand, err := policy.Load(path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(log.Len()))
	b.ResetTimer()
	for range b.N {
		r := replay.New(replay.Options{Candidate: cand})
		if err := r.Read("bench.log", bytes.NewReader(log.Bytes())); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(lines)*float64(b.N)/b.Elapsed().Seconds(), "lines/s")
}
