package e2e

// The backend leg under pressure: a backend slow to answer the final dot,
// and unauthenticated sessions that would hold every backend connection.

import (
	"testing"
	"time"
)

// slowDotSender is the sender for which the backend (Postfix) takes 60 s to
// answer the end-of-data dot: its end-of-data restrictions sleep first, as a
// slow before-queue content scan would.
const slowDotSender = "eod-slow@foreign.test"

// slowDotPostfix makes Postfix sleep 60 s at the end of DATA for
// slowDotSender only (a restriction class through an inline access map),
// keeping the template's end-of-data refusals.
var slowDotPostfix = []string{
	"smtpd_restriction_classes = slow_eod",
	"slow_eod = sleep 60",
	"smtpd_end_of_data_restrictions = check_sender_access inline:{" + slowDotSender + "=slow_eod}",
}

// RFC 5321 4.5.3.2.6 gives a server 10 minutes to answer the final dot. A
// backend that answers after 60 s (longer than backend.timeout, 30 s) must
// get its 250 passed to the client, which waited meanwhile, and the message
// is stored exactly once. With the final reply bounded by backend.timeout,
// the client was told 451 for a message the backend then stored: its retry
// would have stored a second copy.
func TestHardeningSlowFinalReply(t *testing.T) {
	if testing.Short() {
		t.Skip("waits 60 s for the backend's reply")
	}
	t.Parallel()
	pf := startPostfix(t, slowDotPostfix...)
	g := startTLSGuard(t, pf)

	c := dialSMTP(t, g.MX)
	c.ehlo("client.example.net")
	c.openData(t, slowDotSender, alice)
	sent := time.Now()
	c.send("Subject: slow final reply\r\n\r\nbody\r\n.\r\n")
	r, err := c.tryRead(90 * time.Second)
	if err != nil {
		t.Fatalf("no reply to the final dot: %v (got %q)", err, r.raw)
	}
	r.expect(t, 250)
	if waited := time.Since(sent); waited < 55*time.Second {
		t.Fatalf("got %q after %v: the backend's end-of-data sleep did not happen, the test proves nothing", r.raw, waited)
	}
	// The session is still usable after the long wait.
	c.cmd("NOOP").expect(t, 250)
	c.cmd("QUIT").expect(t, 221)
	pf.WaitMessages(t, alice, 1)
	pf.Settle(t)
	if n := len(pf.Messages(t, alice)); n != 1 {
		t.Fatalf("%s holds %d copies, want exactly 1", alice, n)
	}
	if id := queueIDOf(r); id == "" || pf.Messages(t, alice)[0].QueueID() != id {
		t.Errorf("the client's 250 %q does not carry the stored message's queue id", r.raw)
	}
}
