package policy_test

import (
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tlsguard/tlsguard/policy"
)

const ratePolicy = `
groups:
  - name: students
    users: [carol]
rate_limits:
  - name: per-user
    per: user
    groups: [students]
    window: 1h
    messages: 3
    recipients: 5
  - name: per-ip
    per: client_ip
    authenticated: false
    window: 10m
    messages: 2
`

func TestRateLimitMessages(t *testing.T) {
	p := mustParse(t, ratePolicy)
	c := policy.NewCounters(0)
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	carol := policy.Session{User: "carol", ClientIP: netip.MustParseAddr("203.0.113.5")}
	for i := range 3 {
		if d := c.Message(p, carol, now.Add(time.Duration(i)*time.Minute)); d.Action != policy.Accept {
			t.Fatalf("message %d: %v", i+1, d)
		}
	}
	d := c.Message(p, carol, now.Add(3*time.Minute))
	if d.Action != policy.TempFail || d.Rule != "per-user" || d.Source != "test.yaml:6" {
		t.Fatalf("4th message: %v", d)
	}
	if got := d.Reply.String(); !strings.HasPrefix(got, "450 4.7.1 Rate limit reached: too many messages for user carol (at most 3 per 1h), try again in ") {
		t.Fatalf("reply %q", got)
	}
	// A user no entry applies to is not limited.
	alice := policy.Session{User: "alice"}
	for range 10 {
		if d := c.Message(p, alice, now); d.Action != policy.Accept {
			t.Fatalf("alice: %v", d)
		}
	}
	// The refused attempt did not count: after the hour, the sliding window
	// still holds most of the previous hour's three messages...
	if d := c.Message(p, carol, now.Add(61*time.Minute)); d.Action != policy.TempFail {
		t.Fatalf("just after the window: %v", d)
	}
	// ... and after two windows nothing.
	if d := c.Message(p, carol, now.Add(2*time.Hour+time.Minute)); d.Action != policy.Accept {
		t.Fatalf("two windows later: %v", d)
	}
}

func TestRateLimitHintIsWhenItFits(t *testing.T) {
	p := mustParse(t, ratePolicy)
	c := policy.NewCounters(0)
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	ip := policy.Session{ClientIP: netip.MustParseAddr("198.51.100.1")}
	c.Message(p, ip, now)
	c.Message(p, ip, now)
	d := c.Message(p, ip, now.Add(time.Minute))
	if d.Action != policy.TempFail || d.Rule != "per-ip" {
		t.Fatalf("%v", d)
	}
	// The hint is honest: trying again after it works, a bit before does not.
	wait, err := time.ParseDuration(d.Reply.Text[strings.LastIndex(d.Reply.Text, " ")+1:])
	if err != nil {
		t.Fatalf("%q: %v", d.Reply.Text, err)
	}
	at := now.Add(time.Minute)
	if d := c.Message(p, ip, at.Add(wait-5*time.Second)); d.Action != policy.TempFail {
		t.Errorf("before the hint (%v): %v", wait, d)
	}
	if d := c.Message(p, ip, at.Add(wait+time.Second)); d.Action != policy.Accept {
		t.Errorf("after the hint (%v): %v", wait, d)
	}
}

func TestRateLimitRecipients(t *testing.T) {
	p := mustParse(t, ratePolicy)
	c := policy.NewCounters(0)
	now := time.Now()
	carol := policy.Session{User: "carol"}
	for i := range 5 {
		if d := c.Recipient(p, carol, now); d.Action != policy.Accept {
			t.Fatalf("rcpt %d: %v", i, d)
		}
	}
	if d := c.Recipient(p, carol, now); d.Action != policy.TempFail || !strings.Contains(d.Reply.Text, "too many recipients for user carol (at most 5 per 1h)") {
		t.Fatalf("6th: %v", d)
	}
	// Messages are counted apart from recipients.
	if d := c.Message(p, carol, now); d.Action != policy.Accept {
		t.Fatalf("message: %v", d)
	}
}

// Counters outlive a Policy: a reloaded policy with the same entry name
// sees the same counts; a renamed entry starts afresh.
func TestRateLimitSurvivesReload(t *testing.T) {
	p1 := mustParse(t, ratePolicy)
	p2 := mustParse(t, ratePolicy+"\n# reloaded\n")
	c := policy.NewCounters(0)
	now := time.Now()
	carol := policy.Session{User: "carol"}
	for range 3 {
		c.Message(p1, carol, now)
	}
	if d := c.Message(p2, carol, now); d.Action != policy.TempFail {
		t.Fatalf("after reload: %v", d)
	}
	p3 := mustParse(t, strings.Replace(ratePolicy, "name: per-user", "name: per-user-v2", 1))
	if d := c.Message(p3, carol, now); d.Action != policy.Accept {
		t.Fatalf("renamed entry: %v", d)
	}
}

func TestRateLimitIPv6PerSlash64(t *testing.T) {
	p := mustParse(t, ratePolicy)
	c := policy.NewCounters(0)
	now := time.Now()
	c.Message(p, policy.Session{ClientIP: netip.MustParseAddr("2001:db8:1:2::1")}, now)
	c.Message(p, policy.Session{ClientIP: netip.MustParseAddr("2001:db8:1:2::ffff")}, now)
	if d := c.Message(p, policy.Session{ClientIP: netip.MustParseAddr("2001:db8:1:2:ffff::9")}, now); d.Action != policy.TempFail || !strings.Contains(d.Reply.Text, "from 2001:db8:1:2::/64") {
		t.Fatalf("same /64: %v", d)
	}
	if d := c.Message(p, policy.Session{ClientIP: netip.MustParseAddr("2001:db8:1:3::1")}, now); d.Action != policy.Accept {
		t.Fatalf("other /64: %v", d)
	}
	// IPv4-mapped counts as the IPv4 address.
	c.Message(p, policy.Session{ClientIP: netip.MustParseAddr("192.0.2.1")}, now)
	c.Message(p, policy.Session{ClientIP: netip.MustParseAddr("::ffff:192.0.2.1")}, now)
	if d := c.Message(p, policy.Session{ClientIP: netip.MustParseAddr("192.0.2.1")}, now); d.Action != policy.TempFail {
		t.Fatalf("mapped: %v", d)
	}
}

func TestCountersBoundedMemory(t *testing.T) {
	p := mustParse(t, ratePolicy)
	c := policy.NewCounters(100)
	now := time.Now()
	for i := range 1000 {
		ip := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		c.Message(p, policy.Session{ClientIP: ip}, now)
	}
	if n := c.Len(); n != 100 {
		t.Fatalf("%d keys, want 100", n)
	}
	// The most recent keys are kept.
	last := policy.Session{ClientIP: netip.AddrFrom4([4]byte{10, 0, 3, 231})}
	c.Message(p, last, now)
	if d := c.Message(p, last, now); d.Action != policy.TempFail {
		t.Fatalf("recent key forgotten: %v", d)
	}
}

func TestCountersConcurrent(t *testing.T) {
	p := mustParse(t, strings.Replace(ratePolicy, "messages: 3", "messages: 100", 1))
	c := policy.NewCounters(0)
	now := time.Now()
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted := 0
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if c.Message(p, policy.Session{User: "carol"}, now).Action == policy.Accept {
					mu.Lock()
					accepted++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if accepted != 100 {
		t.Fatalf("accepted %d of 400, want exactly 100", accepted)
	}
}

func BenchmarkCountersMessage(b *testing.B) {
	p := mustParse(b, strings.Replace(ratePolicy, "messages: 2", "messages: 2000000000", 1))
	c := policy.NewCounters(0)
	s := policy.Session{ClientIP: netip.MustParseAddr("203.0.113.5")}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		c.Message(p, s, now)
	}
}

// fakeStore answers Take as told and records the checks it got.
type fakeStore struct {
	refuse int
	wait   time.Duration
	err    error
	got    [][]policy.RateCheck
}

func (f *fakeStore) Take(checks []policy.RateCheck) (int, time.Duration, error) {
	f.got = append(f.got, checks)
	return f.refuse, f.wait, f.err
}

// Shared counters: the store decides while it answers (its refusal carries
// the entry's reply and name), the local counters follow what it accepted,
// and when it does not answer they decide alone.
func TestRateLimitShared(t *testing.T) {
	p := mustParse(t, ratePolicy)
	c := policy.NewCounters(0)
	st := &fakeStore{refuse: -1}
	c.Share(st)
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	carol := policy.Session{User: "carol", ClientIP: netip.MustParseAddr("203.0.113.5")}
	for range 2 {
		if d := c.Message(p, carol, now); d.Action != policy.Accept {
			t.Fatalf("store accepts, yet %v", d)
		}
	}
	if len(st.got) != 2 || len(st.got[0]) != 1 || st.got[0][0] != (policy.RateCheck{Limit: "per-user", Kind: "messages", Who: "user:carol", Max: 3, Window: time.Hour}) {
		t.Fatalf("checks sent: %+v", st.got)
	}
	st.refuse, st.wait = 0, 20*time.Minute
	d := c.Message(p, carol, now)
	if d.Action != policy.TempFail || d.Rule != "per-user" || !strings.Contains(d.Reply.String(), "450 4.7.1") || !strings.Contains(d.Reply.String(), "try again in 20m") {
		t.Fatalf("store refuses: %v %s", d, d.Reply)
	}
	// The store is away: the local counters, which followed the two
	// accepted messages, allow one more of the three.
	st.refuse, st.err = -1, errors.New("away")
	if d := c.Message(p, carol, now); d.Action != policy.Accept {
		t.Fatalf("third message, store away: %v", d)
	}
	if d := c.Message(p, carol, now); d.Action != policy.TempFail {
		t.Fatalf("fourth message, store away: %v, want the local limit", d)
	}
}
