package e2e

// AUTH budgets against attackers who act in parallel and from many
// addresses: guesses sent at once cannot overdraw a budget, and spending a
// user's budget does not lock the real user out of the addresses they use.
// The users file is hashed at bcrypt cost 10, so that each check takes as
// long as on a real server and guesses sent together are checked together.

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// guess is one AUTH PLAIN attempt of a burst.
type guess struct{ src, user, pass string }

// authBurst opens one implicit-TLS session per guess (greeting, EHLO), then
// sends every AUTH PLAIN at once and returns the replies in order (code 0:
// no reply). during, if not nil, runs while the burst is answered.
func authBurst(t *testing.T, g *TLSGuard, guesses []guess, during func()) []reply {
	t.Helper()
	cfg := g.PKI.clientTLS()
	conns := make([]*smtpConn, len(guesses))
	for i, gs := range guesses {
		conns[i] = dialImplicitTLSFrom(t, gs.src, g.Submissions, cfg)
		conns[i].ehlo("guesser.example.net")
	}
	replies := make([]reply, len(guesses))
	var start, done sync.WaitGroup
	start.Add(1)
	for i, c := range conns {
		done.Add(1)
		go func() {
			defer done.Done()
			start.Wait()
			gs := guesses[i]
			c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
			if _, err := c.conn.Write([]byte("AUTH PLAIN " + b64("\x00"+gs.user+"\x00"+gs.pass) + "\r\n")); err != nil {
				return
			}
			replies[i], _ = c.tryRead(ioTimeout)
		}()
	}
	start.Done()
	if during != nil {
		during()
	}
	done.Wait()
	return replies
}

// checkedPasswords counts the passwords tlsguard checked for user, per
// client address: "auth succeeded" lines, and "auth failed" lines for bad
// credentials (the one failure that comes from a check).
func checkedPasswords(t testing.TB, g *TLSGuard, user string) map[string]int {
	t.Helper()
	n := map[string]int{}
	for _, line := range strings.Split(readFile(g.LogFile), "\n") {
		var rec struct {
			Msg, User, Reason string
			ClientIP          string `json:"client_ip"`
		}
		if json.Unmarshal([]byte(line), &rec) != nil || rec.User != user {
			continue
		}
		if rec.Msg == "auth succeeded" || rec.Msg == "auth failed" && rec.Reason == "bad credentials" {
			n[rec.ClientIP]++
		}
	}
	return n
}

func total(m map[string]int) (n int) {
	for _, v := range m {
		n += v
	}
	return n
}

// logIn runs AUTH PLAIN from src with the right password and returns the
// reply and how long it took.
func logIn(t *testing.T, g *TLSGuard, src, user, pass string) (reply, time.Duration, *smtpConn) {
	t.Helper()
	c := dialImplicitTLSFrom(t, src, g.Submissions, g.PKI.clientTLS())
	c.ehlo("client.example.net")
	start := time.Now()
	r := c.authPlain("", user, pass)
	return r, time.Since(start), c
}

// Fifty guesses at bob's password sent at once from one address: at most
// auth_max_failures (5) are checked, the rest are refused unchecked, none
// gets in; then the right password from that address is refused (421 4.7.0
// and a hang-up) without a check.
func TestHardeningAuthParallelGuessesOneAddress(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withBcryptCost(10),
		withConfig("limits:\n  auth_fail_delay: 200ms\n  max_sessions_per_ip: 100\n"))

	const src = "127.0.3.1"
	var guesses []guess
	for i := 0; i < 50; i++ {
		guesses = append(guesses, guess{src, bobUser, fmt.Sprintf("guess-%d", i)})
	}
	for i, r := range authBurst(t, g, guesses, nil) {
		if r.code != 535 && r.code != 421 && r.code != 454 {
			t.Errorf("guess %d: %q, want 535, 421 or 454", i, r.raw)
		}
	}
	if n := checkedPasswords(t, g, bobUser)[src]; n > 5 {
		t.Errorf("%d of 50 simultaneous guesses from one address were checked, want at most auth_max_failures (5)", n)
	}

	r, _, c := logIn(t, g, src, bobUser, bobPass)
	r.expectPrefix(t, "421 4.7.0 ")
	c.expectClosed()
	if n := checkedPasswords(t, g, bobUser)[src]; n > 5 {
		t.Errorf("the right password was checked with the address's budget spent (%d checks)", n)
	}
}

// 150 guesses at bob's password sent at once from 150 addresses, the right
// password among them: at most auth_user_max_failures (50) wrong passwords
// are checked in all. Afterwards the right password from a new address gets
// 454 4.7.0 (temporary: the client retries later) and is not checked, while
// bob at the address he logged in from before gets in.
func TestHardeningAuthParallelGuessesManyAddresses(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withBcryptCost(10), withConfig("limits:\n  auth_fail_delay: 200ms\n"))

	const home = "127.0.4.250"
	r, d, c := logIn(t, g, home, bobUser, bobPass)
	r.expect(t, 235)
	t.Logf("bob's login before the spray: %v", d)
	c.cmd("QUIT").expect(t, 221)

	var guesses []guess
	for i := 1; i <= 150; i++ {
		guesses = append(guesses, guess{fmt.Sprintf("127.0.4.%d", i), bobUser, fmt.Sprintf("guess-%d", i)})
	}
	guesses[75].pass = bobPass
	// bob logs in from home while the spray is answered.
	dc := dialImplicitTLSFrom(t, home, g.Submissions, g.PKI.clientTLS())
	dc.ehlo("client.example.net")
	replies := authBurst(t, g, guesses, func() {
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		dc.send("AUTH PLAIN " + b64("\x00"+bobUser+"\x00"+bobPass) + "\r\n")
		r := dc.read()
		t.Logf("bob's login from home during the spray: %v (%q)", time.Since(start), strings.TrimSpace(r.raw))
		r.expect(t, 235)
	})
	for i, r := range replies {
		switch {
		case r.code == 235 && i == 75: // the right password, checked within the budget
		case r.code == 535 || r.code == 454:
		default:
			t.Errorf("guess %d from %s: %q, want 535 or 454", i, guesses[i].src, r.raw)
		}
	}
	// Guesses that found no free check slot in time were refused unchecked
	// (454) and left the budget unspent: spend the rest one at a time.
	for i := 1; i <= 60; i++ {
		c := dialImplicitTLSFrom(t, fmt.Sprintf("127.0.5.%d", i), g.Submissions, g.PKI.clientTLS())
		c.ehlo("guesser.example.net")
		if r := c.authPlain("", bobUser, "late-guess"); r.code == 454 {
			break
		} else if r.code != 535 {
			t.Fatalf("late guess %d: %q, want 535 or 454", i, r.raw)
		}
	}
	checked := checkedPasswords(t, g, bobUser)
	delete(checked, home)
	if n := total(checked); n > 51 {
		t.Errorf("%d guesses from new addresses were checked, want at most auth_user_max_failures (50) and the right one", n)
	}

	r, _, _ = logIn(t, g, "127.0.4.251", bobUser, bobPass)
	r.expectPrefix(t, "454 4.7.0 ")
	if n := checkedPasswords(t, g, bobUser)["127.0.4.251"]; n != 0 {
		t.Errorf("the right password from a new address was checked with bob's budget spent")
	}
	r, _, c = logIn(t, g, home, bobUser, bobPass)
	r.expect(t, 235)
	tryTransaction(t, c, bob, carol, "Subject: during a spray\r\n\r\nbody\r\n").expect(t, 250)
	pf.WaitMessages(t, carol, 1)
	expectLogLine(t, g, "auth refused", `"user":"bob"`, `"reason":"user throttled at new addresses"`, `"password_checked":false`)
}

// limits.auth_remember: an address bob logged in from stays exempt from his
// spent per-user budget for auth_remember after the last login there, then
// it is a new address like any other (454 4.7.0).
func TestConfigKeyAuthRemember(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	const remember = 3 * time.Second
	g := startTLSGuard(t, pf, withConfig(fmt.Sprintf(
		"limits:\n  auth_fail_delay: 50ms\n  auth_user_max_failures: 2\n  auth_remember: %v\n", remember)))

	r, _, c := logIn(t, g, "127.0.11.1", bobUser, bobPass)
	r.expect(t, 235)
	c.cmd("QUIT").expect(t, 221)
	last := time.Now()
	for i := 2; i <= 4; i++ {
		c := dialImplicitTLSFrom(t, fmt.Sprintf("127.0.11.%d", i), g.Submissions, g.PKI.clientTLS())
		c.ehlo("guesser.example.net")
		r := c.authPlain("", bobUser, "guess")
		if i <= 3 {
			r.expectPrefix(t, "535 5.7.8 ")
		} else {
			r.expectPrefix(t, "454 4.7.0 ")
		}
	}
	if time.Since(last) < remember-time.Second { // else too late to tell
		r, _, _ = logIn(t, g, "127.0.11.1", bobUser, bobPass)
		r.expect(t, 235)
		last = time.Now()
	}
	time.Sleep(time.Until(last.Add(remember + time.Second)))
	r, _, _ = logIn(t, g, "127.0.11.1", bobUser, bobPass)
	r.expectPrefix(t, "454 4.7.0 ")
}

// limits.auth_max_concurrent: with one check slot and checks that take a
// while (bcrypt cost 12), forty logins sent at once cannot all be checked
// within the 5 s a login may wait for a slot: those left over get
// 454 4.7.0 (a temporary failure, never a login without a check), and
// the same clients then log in.
func TestConfigKeyAuthMaxConcurrent(t *testing.T) {
	t.Parallel()
	pf := startPostfix(t)
	g := startTLSGuard(t, pf, withBcryptCost(12), withConfig("limits:\n  auth_max_concurrent: 1\n"))

	var logins []guess
	for i := 1; i <= 40; i++ {
		logins = append(logins, guess{fmt.Sprintf("127.0.12.%d", i), aliceUser, alicePass})
	}
	busy := 0
	for i, r := range authBurst(t, g, logins, nil) {
		switch {
		case r.code == 235:
		case strings.HasPrefix(r.raw, "454 4.7.0 Too many logins in progress"):
			busy++
		default:
			t.Errorf("login %d: %q, want 235 or 454 4.7.0", i, r.raw)
		}
	}
	if busy == 0 {
		t.Errorf("forty logins at bcrypt cost 12 through one check slot were all checked within the slot wait")
	}
	expectLogLine(t, g, "auth refused", `"reason":"no free check slot"`, `"password_checked":false`)
	// The turned-away clients get in now.
	for i := 1; i <= 40 && busy > 0; i += 8 {
		r, _, _ := logIn(t, g, fmt.Sprintf("127.0.12.%d", i), aliceUser, alicePass)
		r.expect(t, 235)
	}
}
