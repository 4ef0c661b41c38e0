package e2e

// Helpers shared by the hardening tests (hardening_*_test.go): attacks,
// faults and abuse against the real binary and a real Postfix.

import (
	"errors"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
)

// readUntilClosed reads everything the server sends until it closes the
// connection or within passes; it returns the lines and whether the
// connection was closed (false: still open at the deadline).
func (c *smtpConn) readUntilClosed(within time.Duration) ([]string, bool) {
	c.conn.SetReadDeadline(time.Now().Add(within))
	var got []string
	for {
		line, err := c.r.ReadString('\n')
		if line != "" {
			got = append(got, strings.TrimRight(line, "\r\n"))
		}
		if err == nil {
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return got, false
		}
		return got, true
	}
}

// postfixRecipients returns the envelope recipients Postfix's log shows for
// queue id: orig_to when it rewrote the address, else to. This is what the
// backend received in RCPT TO, as Postfix understood it.
func postfixRecipients(pf *Postfix, id string) []string {
	re := regexp.MustCompile(regexp.QuoteMeta(id) + `: to=<([^>]*)>(?:, orig_to=<([^>]*)>)?`)
	var out []string
	for _, m := range re.FindAllStringSubmatch(pf.Log(), -1) {
		if m[2] != "" {
			out = append(out, m[2])
		} else {
			out = append(out, m[1])
		}
	}
	return out
}

// waitPostfixRecipients waits until Postfix has logged a delivery attempt
// for queue id and returns the recipients it logged.
func waitPostfixRecipients(t testing.TB, pf *Postfix, id string) []string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if r := postfixRecipients(pf, id); len(r) > 0 {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("postfix logged no recipient for queue id %s within 20s\n%s", id, pf.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// queueIDOf takes Postfix's queue id out of an end-of-DATA reply passed
// through tlsguard ("250 2.0.0 Ok: queued as 4XyZ").
func queueIDOf(r reply) string {
	f := strings.Fields(r.text())
	if len(f) == 0 {
		return ""
	}
	return f[len(f)-1]
}

// postfixAccepted counts the messages Postfix committed to its queue
// (qmgr logs "from=<...>, size=N, nrcpt=N" once per message that was taken
// in whole; an aborted DATA never gets there), whatever became of them.
func postfixAccepted(pf *Postfix) int {
	return strings.Count(pf.Log(), ", nrcpt=")
}

// hangingBackend is a TCP listener that accepts and then says nothing: a
// "hung" legacy server, which Postfix cannot be made to be on demand. It
// counts the connections it took.
type hangingBackend struct {
	ln    net.Listener
	Addr  string
	conns chan net.Conn
}

func startHangingBackend(t testing.TB) *hangingBackend {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hangingBackend{ln: ln, Addr: ln.Addr().String(), conns: make(chan net.Conn, 64)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			select {
			case h.conns <- c:
			default:
				c.Close()
			}
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		for {
			select {
			case c := <-h.conns:
				c.Close()
			default:
				return
			}
		}
	})
	return h
}
