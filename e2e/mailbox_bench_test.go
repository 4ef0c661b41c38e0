package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMailboxIdleMemoryBench is a measurement, not a test (it asserts
// nothing and runs only with TLSGUARD_MAILBOX_BENCH=N, N sessions): the
// memory tlsguard holds per idle IMAP session (logged in through tlsguard
// to Dovecot, INBOX selected, in IDLE) next to an idle SMTP session on
// implicit TLS (after EHLO). It reads the process's RSS and Go heap and
// stacks (admin /metrics) before and after each batch, each time after
// the runtime's periodic collection (TLSGUARD_MAILBOX_BENCH_QUICK: 3s).
//
//	TLSGUARD_MAILBOX_BENCH=200 go test -count=1 -v -run TestMailboxIdleMemoryBench ./e2e/
func TestMailboxIdleMemoryBench(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("TLSGUARD_MAILBOX_BENCH"))
	if n <= 0 {
		t.Skip("a measurement: set TLSGUARD_MAILBOX_BENCH to the number of sessions")
	}
	admin := loopbackAddr(t)
	m := startMailboxGuard(t, fmt.Sprintf("limits:\n  max_sessions_per_ip: %d\n  max_sessions: %d\nadmin:\n  address: %q\n", 3*n, 4*n, admin), "")
	// Dovecot allows 10 sessions per user and address (all come from
	// tlsguard's): n/5 users with the same password.
	users := n/5 + 1
	var passwd strings.Builder
	passwd.WriteString("alice:{PLAIN}" + mbPass + "\n")
	for i := 0; i < users; i++ {
		fmt.Fprintf(&passwd, "u%d:{PLAIN}%s\n", i, mbPass)
		dovecotMessage(t, m.dv, "u"+strconv.Itoa(i), "1", mbSubject)
	}
	writeFile(t, m.dv.Dir+"/passwd", passwd.String())
	time.Sleep(time.Second) // passwd-file is re-read on a change of its mtime

	// The runtime collects at least every two minutes, shrinking stacks
	// grown by the TLS handshake and freeing the login's garbage: what an
	// idle session holds is what is left after that.
	settle := 130 * time.Second
	if os.Getenv("TLSGUARD_MAILBOX_BENCH_QUICK") != "" {
		settle = 3 * time.Second
	}
	measure := func() (rss, heap, stack float64) {
		time.Sleep(settle)
		resp, err := http.Get("http://" + admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		metric := func(name string) float64 {
			mm := regexp.MustCompile(`(?m)^` + name + ` (\S+)$`).FindSubmatch(body)
			if mm == nil {
				t.Fatalf("no %s in /metrics", name)
			}
			v, _ := strconv.ParseFloat(string(mm[1]), 64)
			return v
		}
		return metric("process_resident_memory_bytes"), metric("go_memstats_heap_inuse_bytes"), metric("go_memstats_stack_inuse_bytes")
	}
	report := func(what string, before, after [3]float64) {
		t.Logf("%s: %d sessions: RSS %.1f KiB/session, Go heap in use %.1f KiB/session, stacks %.1f KiB/session", what, n,
			(after[0]-before[0])/float64(n)/1024, (after[1]-before[1])/float64(n)/1024, (after[2]-before[2])/float64(n)/1024)
	}
	var b0, b1, b2 [3]float64
	b0[0], b0[1], b0[2] = measure()
	var smtp []*smtpConn
	for i := 0; i < n; i++ {
		c := dialImplicitTLSFrom(t, "127.0.0.1", m.Submissions, m.PKI.clientTLS())
		c.ehlo("client.example.net")
		smtp = append(smtp, c)
	}
	b1[0], b1[1], b1[2] = measure()
	report("SMTP, implicit TLS, after EHLO", b0, b1)
	var imap []*mbConn
	for i := 0; i < n; i++ {
		c := dialMailbox(t, "127.0.0.1", m.IMAPS, true, m.PKI)
		c.line()
		if r := last(c.cmd("a", fmt.Sprintf("LOGIN u%d %s", i%users, mbPass))); !strings.HasPrefix(r, "a OK") {
			t.Fatalf("session %d: LOGIN: %q", i, r)
		}
		c.cmd("b", "SELECT INBOX")
		c.send("c IDLE\r\n")
		c.line()
		imap = append(imap, c)
	}
	b2[0], b2[1], b2[2] = measure()
	report("IMAP, implicit TLS, logged in, IDLE", b1, b2)
	_ = smtp
	_ = imap
}
