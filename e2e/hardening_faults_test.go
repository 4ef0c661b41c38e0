package e2e

// Faults: nothing lost, nothing duplicated. For each fault the test checks
// what the client was told and what the backend stored: acknowledged (250)
// and stored once, or not acknowledged (4xx/5xx or no reply) and not
// stored. (Backend down before the session and dying after RCPT are
// TestBackendDownGivesTempfail and TestBackendDiesMidTransaction; the
// backend's 4xx/5xx at the end of DATA is TestEndOfDataFollowsBackend.)

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The backend refuses connections, then comes back: the client is told
// 4xx, stores nothing, and its retry in the same session is stored once.
func TestHardeningFaultBackendRefusesThenRecovers(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)
	pf.Stop(t)

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.cmd("MAIL FROM:<retry@foreign.test>").expect(t, 250)
	expectBackendTempfail(t, c.cmd("RCPT TO:<"+alice+">"))
	c.cmd("RSET").expect(t, 250)

	pf.Restart(t)
	tryTransaction(t, c, "retry@foreign.test", alice, "Subject: retried\r\n\r\nbody\r\n").expect(t, 250)
	c.cmd("QUIT").expect(t, 221)
	pf.WaitMessages(t, alice, 1)
	pf.Settle(t)
	if n := len(pf.Messages(t, alice)); n != 1 {
		t.Errorf("alice holds %d messages, want exactly 1", n)
	}
}

// scriptedBackend is a fake legacy server that speaks SMTP correctly up to
// a point and then goes silent (accepts, reads, never answers): the hung
// backends Postfix cannot be made into. hangAt is "greeting", "rcpt" or
// "eod" (after the final dot).
func scriptedBackend(t *testing.T, hangAt string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				hang := func() {
					// Read (and drop) whatever comes, answer nothing.
					go func() {
						buf := make([]byte, 4096)
						for {
							if _, err := conn.Read(buf); err != nil {
								return
							}
						}
					}()
					<-done
				}
				if hangAt == "greeting" {
					hang()
					return
				}
				w := bufio.NewWriter(conn)
				say := func(s string) { w.WriteString(s + "\r\n"); w.Flush() }
				r := bufio.NewReader(conn)
				say("220 hung.example.net ESMTP")
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					cmd := strings.ToUpper(strings.TrimSpace(line))
					switch {
					case strings.HasPrefix(cmd, "EHLO"):
						say("250-hung.example.net\r\n250-PIPELINING\r\n250 8BITMIME")
					case strings.HasPrefix(cmd, "MAIL"):
						say("250 2.1.0 Ok")
					case strings.HasPrefix(cmd, "RCPT"):
						if hangAt == "rcpt" {
							hang()
							return
						}
						say("250 2.1.5 Ok")
					case cmd == "DATA":
						say("354 End data with <CR><LF>.<CR><LF>")
						for {
							l, err := r.ReadString('\n')
							if err != nil {
								return
							}
							if l == ".\r\n" {
								break
							}
						}
						hang() // hangAt == "eod"
						return
					case cmd == "QUIT":
						say("221 2.0.0 Bye")
						return
					default:
						say("250 2.0.0 Ok")
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// startGuardEdited is startTLSGuard with the generated config passed
// through edit first (for settings inside sections startTLSGuard writes,
// such as backend.timeout), against the backend at backendAddr.
func startGuardEdited(t *testing.T, backendAddr string, edit func(string) string, extraYAML string) *TLSGuard {
	t.Helper()
	dir := t.TempDir()
	g := &TLSGuard{
		Submissions: loopbackAddr(t), Submission: loopbackAddr(t), Strict: loopbackAddr(t), MX: loopbackAddr(t),
		PKI: newTestPKI(t, dir),
	}
	g.Dir = dir
	usersFile := writeHtpasswd(t, dir, map[string]string{aliceUser: alicePass, bobUser: bobPass})
	policyFile := filepath.Join(dir, "policy.yaml")
	writeFile(t, policyFile, policyYAML([]string{"example.org"}, []string{"192.0.2.0/24"}))
	cfg := filepath.Join(dir, "tlsguard.yaml")
	writeFile(t, cfg, edit(g.configYAML(backendAddr, usersFile, policyFile))+extraYAML)
	run := startBinary(t, cfg, g.MX)
	g.ConfigFile, g.LogFile, g.cmd, g.exited = run.ConfigFile, run.LogFile, run.cmd, run.exited
	for _, addr := range []string{g.Submission, g.MX} {
		if err := waitGreeting(addr, g.exited, guardStartTimeout); err != nil {
			t.Fatalf("tlsguard: %v\n%s", err, g.Log())
		}
	}
	return g
}

func backendTimeout(d string) func(string) string {
	return func(cfg string) string { return strings.Replace(cfg, "  timeout: 30s\n", "  timeout: "+d+"\n", 1) }
}

// The backend accepts the connection and then hangs, at the greeting, at
// RCPT, or after the final dot: within backend.timeout (after the dot:
// backend.data_done_timeout) the client gets a 4xx (451 4.4.1), never a 250
// and never a 5xx, so it keeps the message.
// (After the final dot a 4xx may cause a duplicate if the backend did store
// the message: the RFC 1047 window, documented in SECURITY.md.)
func TestHardeningFaultBackendHangs(t *testing.T) {
	t.Parallel()
	for _, stage := range []string{"greeting", "rcpt", "eod"} {
		t.Run(stage, func(t *testing.T) {
			t.Parallel()
			// After the final dot the wait is backend.data_done_timeout.
			g := startGuardEdited(t, scriptedBackend(t, stage), backendTimeout("2s\n  data_done_timeout: 3s"), "")
			c := dialSMTP(t, g.MX)
			c.ehlo("client.example.net")
			start := time.Now()
			r := tryTransaction(t, c, "someone@foreign.test", alice, "Subject: hung backend\r\n\r\nbody\r\n")
			expectBackendTempfail(t, r)
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("the client waited %v for its 4xx; backend.timeout is 2s", d)
			}
			// The session is still usable (and honest) afterwards.
			c.cmd("RSET").expect(t, 250)
			c.cmd("NOOP").expect(t, 250)
		})
	}
}

// smtpdPIDs returns the pids of the smtpd processes of this Postfix
// instance (its master's process group), which the test started.
func (p *Postfix) smtpdPIDs() []int {
	pgid := p.master.Process.Pid
	var pids []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		s := string(stat)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < 0 {
			continue
		}
		f := strings.Fields(s[close+1:])
		if s[open+1:close] == "smtpd" && len(f) > 2 && f[2] == strconv.Itoa(pgid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// The backend closes mid-DATA (its smtpd is killed while the client is
// still uploading): the client is told 4xx at the end of its message,
// nothing is stored, and the retry is stored once.
func TestHardeningFaultBackendClosesMidData(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.openData(t, "someone@foreign.test", alice)
	c.send("Subject: backend closes mid-DATA\r\n\r\nfirst half\r\n")
	time.Sleep(200 * time.Millisecond)
	pids := pf.smtpdPIDs()
	if len(pids) == 0 {
		t.Fatal("no smtpd process found for the backend")
	}
	for _, pid := range pids {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	time.Sleep(200 * time.Millisecond)
	c.send(strings.Repeat("second half\r\n", 2000) + ".\r\n")
	r := c.read()
	expectBackendTempfail(t, r)
	// The retry, on a fresh backend connection.
	c.cmd("RSET").expect(t, 250)
	tryTransaction(t, c, "someone@foreign.test", alice, "Subject: retry after the backend closed\r\n\r\nbody\r\n").expect(t, 250)
	c.cmd("QUIT").expect(t, 221)

	msgs := pf.WaitMessages(t, alice, 1)
	pf.Settle(t)
	if n := len(pf.Messages(t, alice)); n != 1 || msgs[0].Header.Get("Subject") != "retry after the backend closed" {
		t.Errorf("alice holds %d message(s) (first %q), want only the retry", n, msgs[0].Header.Get("Subject"))
	}
}

// The backend answers 4xx or 5xx at each stage (MAIL, RCPT, the DATA
// command; the end of DATA is TestEndOfDataFollowsBackend): the client gets
// the backend's code and exactly one reply (the next one answers RSET),
// nothing is stored, and a later transaction in the same session is stored
// once.
func TestHardeningFaultBackendRefusesAtEachStage(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t,
		"smtpd_delay_reject = no",
		"smtpd_sender_restrictions = check_sender_access inline:{ {mail-reject@foreign.test = 553 5.7.1 refused at MAIL}, {mail-tempfail@foreign.test = 450 4.7.1 tempfail at MAIL} }",
		"smtpd_recipient_restrictions = check_recipient_access inline:{ {postmaster@example.org = 550 5.7.1 refused at RCPT}, {victim@example.org = 450 4.2.1 tempfail at RCPT} }",
		"smtpd_data_restrictions = check_sender_access inline:{ {data-reject@foreign.test = 554 5.7.1 refused at DATA}, {data-tempfail@foreign.test = 451 4.7.1 tempfail at DATA} }",
	)
	g := startTLSGuard(t, pf)
	cases := []struct {
		stage, from, to, want string
	}{
		{"MAIL 5xx", "mail-reject@foreign.test", alice, "553 5.7.1"},
		{"MAIL 4xx", "mail-tempfail@foreign.test", alice, "450 4.7.1"},
		{"RCPT 5xx", "someone@foreign.test", "postmaster@example.org", "550 5.7.1"},
		{"RCPT 4xx", "someone@foreign.test", victim, "450 4.2.1"},
		{"DATA 5xx", "data-reject@foreign.test", alice, "554 5.7.1"},
		{"DATA 4xx", "data-tempfail@foreign.test", alice, "451 4.7.1"},
	}
	for _, tc := range cases {
		c := dialSMTP(t, g.MX)
		c.ehlo("client.example.net")
		r := tryTransaction(t, c, tc.from, tc.to, "Subject: "+tc.stage+"\r\n\r\nbody\r\n")
		if !strings.HasPrefix(r.last(), tc.want+" ") || !strings.Contains(r.text(), "at "+strings.Fields(tc.stage)[0]) {
			t.Errorf("%s: client got %q, want the backend's %s reply", tc.stage, r.raw, tc.want)
		}
		// Exactly one reply to the message: the next answers RSET.
		c.cmd("RSET").expect(t, 250)
		tryTransaction(t, c, "someone@foreign.test", bob, "Subject: after "+tc.stage+"\r\n\r\nbody\r\n").expect(t, 250)
		c.cmd("QUIT").expect(t, 221)
	}
	pf.WaitMessages(t, bob, len(cases))
	pf.Settle(t)
	pf.ExpectEmpty(t, alice, victim, "postmaster@example.org")
	if n := postfixAccepted(pf); n != len(cases) {
		t.Errorf("the backend took in %d messages, want %d (one per successful transaction)", n, len(cases))
	}
}

// The client disconnects mid-DATA: the backend never sees the final dot and
// stores nothing; tlsguard logs the transaction as not delivered; another
// client's message is stored once.
func TestHardeningFaultClientDisconnectsMidData(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf)

	for i, how := range []string{"close", "reset"} {
		c := dialSMTP(t, g.MX)
		c.ehlo("client.example.net")
		c.openData(t, "gone@foreign.test", alice)
		c.send(fmt.Sprintf("Subject: client gone %d\r\n\r\n", i) + strings.Repeat("half a message\r\n", 500))
		if how == "reset" {
			c.conn.(*net.TCPConn).SetLinger(0) // RST instead of FIN
		}
		c.conn.Close()
	}
	expectLogLine(t, g, "transaction", `"from":"gone@foreign.test"`, `"delivered":false`)
	goodClientDelivers(t, g, pf, "after clients vanished", 1)
	pf.Settle(t)
	pf.ExpectEmpty(t, alice)
	if n := postfixAccepted(pf); n != 1 {
		t.Errorf("the backend took in %d messages, want 1 (the good client's)", n)
	}
}

// tlsguard gets SIGTERM while a client is in the middle of DATA and does not
// finish within shutdown_grace: the client is told 421 4.3.2, the backend
// stores nothing, tlsguard exits 0. A client that finishes within the grace
// is acknowledged and stored once.
func TestHardeningFaultSIGTERMMidData(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withConfig("shutdown_grace: 2s\n"))

	slow := dialSMTP(t, g.MX)
	slow.ehlo("slow.example.net")
	slow.openData(t, "slow@foreign.test", alice)
	slow.send("Subject: cut by shutdown\r\n\r\nfirst line\r\n")

	quick := dialSMTP(t, g.MX)
	quick.ehlo("quick.example.net")
	quick.openData(t, "quick@foreign.test", bob)
	quick.send("Subject: finished within the grace\r\n\r\nfirst line\r\n")

	g.cmd.Process.Signal(syscall.SIGTERM)
	waitNotListening(t, g.MX)
	quick.send("last line\r\n.\r\n")
	quick.read().expect(t, 250)

	// The slow client keeps uploading, slower than the grace allows.
	stop := make(chan struct{})
	go drip(slow.conn, strings.Repeat("still uploading\r\n", 100), 100*time.Millisecond, stop)
	got, closed := slow.readUntilClosed(15 * time.Second)
	close(stop)
	if !closed || len(got) == 0 || !strings.HasPrefix(got[len(got)-1], "421 4.3.2 ") {
		t.Errorf("client in DATA at the end of the grace: closed=%v, got %q; want 421 4.3.2 and a close", closed, got)
	}
	for _, l := range got {
		if strings.HasPrefix(l, "250") {
			t.Errorf("the cut message was acknowledged: %q", got)
		}
	}
	select {
	case <-g.exited:
		if code := g.cmd.ProcessState.ExitCode(); code != 0 {
			t.Errorf("tlsguard exited %d after SIGTERM, want 0", code)
		}
	case <-time.After(15 * time.Second):
		t.Errorf("tlsguard still running 15s after SIGTERM")
	}
	pf.WaitMessages(t, bob, 1)
	pf.Settle(t)
	pf.ExpectEmpty(t, alice)
	if n := postfixAccepted(pf); n != 1 {
		t.Errorf("the backend took in %d messages, want 1", n)
	}
}

// faultyBackend is a fake legacy server that, while a fault is set,
// answers its greeting or EHLO with a fixed refusal (what Postfix does when
// overloaded or shutting down, which cannot be had from it on demand), and
// otherwise takes mail, counting the messages it took in whole.
type faultyBackend struct {
	Addr   string
	fault  atomic.Pointer[[2]string] // stage ("greeting", "ehlo"), reply line
	stored atomic.Int32

	mu    sync.Mutex
	conns map[net.Conn]bool
}

// setFault sets (or, with nil, clears) the fault for new connections and
// closes the open ones, as a backend restart would: tlsguard's pooled
// connections are gone and it must dial again.
func (b *faultyBackend) setFault(f *[2]string) {
	b.fault.Store(f)
	b.mu.Lock()
	defer b.mu.Unlock()
	for c := range b.conns {
		c.Close()
	}
}

func startFaultyBackend(t *testing.T) *faultyBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	b := &faultyBackend{Addr: ln.Addr().String(), conns: map[net.Conn]bool{}}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go b.serve(conn)
		}
	}()
	return b
}

func (b *faultyBackend) serve(conn net.Conn) {
	b.mu.Lock()
	b.conns[conn] = true
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.conns, conn)
		b.mu.Unlock()
		conn.Close()
	}()
	conn.SetDeadline(time.Now().Add(time.Minute))
	w := bufio.NewWriter(conn)
	say := func(s string) { w.WriteString(s + "\r\n"); w.Flush() }
	fault := b.fault.Load()
	if fault != nil && fault[0] == "greeting" {
		// RFC 5321 3.1: after a 554 greeting the server waits for QUIT.
		say(fault[1])
		bufio.NewReader(conn).ReadString('\n')
		say("221 2.0.0 Bye")
		return
	}
	say("220 faulty.example.net ESMTP")
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		cmd := strings.ToUpper(strings.TrimSpace(line))
		switch {
		case strings.HasPrefix(cmd, "EHLO") || strings.HasPrefix(cmd, "HELO"):
			if fault != nil && fault[0] == "ehlo" {
				say(fault[1])
				if strings.HasPrefix(fault[1], "421") {
					return
				}
				continue
			}
			say("250-faulty.example.net\r\n250-PIPELINING\r\n250 8BITMIME")
		case strings.HasPrefix(cmd, "MAIL"):
			say("250 2.1.0 Ok")
		case strings.HasPrefix(cmd, "RCPT"):
			say("250 2.1.5 Ok")
		case cmd == "DATA":
			say("354 End data with <CR><LF>.<CR><LF>")
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return // no final dot: nothing stored
				}
				if l == ".\r\n" {
					break
				}
			}
			n := b.stored.Add(1)
			say(fmt.Sprintf("250 2.0.0 Ok: queued as FAKE%d", n))
		case cmd == "QUIT":
			say("221 2.0.0 Bye")
			return
		default:
			say("250 2.0.0 Ok")
		}
	}
}

// The backend refuses at its greeting or at EHLO (4xx and 5xx, what an
// overloaded or misconfigured legacy server says): the client is never
// told 250, is told a 4xx that keeps its message queued (these replies are
// about the backend host, not the message: a sending MTA skips such a host
// and retries, it never bounces the message), nothing is stored, and once
// the backend is healthy the retry in the same session is stored once.
func TestHardeningFaultBackendRefusesGreetingOrEHLO(t *testing.T) {
	t.Parallel()
	b := startFaultyBackend(t)
	g := startGuardEdited(t, b.Addr, backendTimeout("5s"), "")

	faults := [][2]string{
		{"greeting", "421 4.3.2 faulty.example.net Service shutting down"},
		{"greeting", "554 5.3.2 faulty.example.net No SMTP service here"},
		{"ehlo", "421 4.7.0 faulty.example.net Error: too many connections"},
		{"ehlo", "550 5.7.1 Client host rejected: Access denied"},
	}
	for i, f := range faults {
		b.setFault(&f)
		c := dialSMTP(t, g.MX)
		c.ehlo("client.example.net")
		r := tryTransaction(t, c, "someone@foreign.test", alice, "Subject: backend refuses at "+f[0]+"\r\n\r\nbody\r\n")
		if r.code/100 != 4 {
			t.Errorf("backend says %q at %s: client got %q, want a 4xx (451 4.4.1)", f[1], f[0], r.raw)
		}
		if n := b.stored.Load(); n != int32(i) {
			t.Errorf("backend says %q at %s: it stored %d messages in all, want %d", f[1], f[0], n, i)
		}
		b.setFault(nil)
		c.cmd("RSET").expect(t, 250)
		tryTransaction(t, c, "someone@foreign.test", alice, "Subject: retry\r\n\r\nbody\r\n").expect(t, 250)
		c.cmd("QUIT").expect(t, 221)
		if n := b.stored.Load(); n != int32(i+1) {
			t.Errorf("after the retry the backend stored %d messages in all, want %d", n, i+1)
		}
	}
}
