package smtp

import (
	"bufio"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// writeCounter counts the client's writes.
type writeCounter struct {
	net.Conn
	n atomic.Int32
}

func (w *writeCounter) Write(b []byte) (int, error) {
	w.n.Add(1)
	return w.Conn.Write(b)
}

// pipelineServer greets, answers EHLO with exts, then for each step reads
// the given number of command lines and only then writes the replies.
type pipelineStep struct {
	read    int
	replies []string
}

func runPipelineTest(t *testing.T, exts string, steps []pipelineStep, client func(c *Client, wc *writeCounter)) []string {
	t.Helper()
	cc, sc := net.Pipe()
	done := make(chan []string, 1)
	go func() {
		defer sc.Close()
		var got []string
		r := bufio.NewReader(sc)
		sc.SetDeadline(time.Now().Add(5 * time.Second))
		sc.Write([]byte("220 test ready\r\n"))
		if _, err := r.ReadString('\n'); err != nil { // EHLO
			done <- got
			return
		}
		sc.Write([]byte("250-test\r\n" + exts + "250 8BITMIME\r\n"))
		for _, st := range steps {
			for i := 0; i < st.read; i++ {
				l, err := r.ReadString('\n')
				if err != nil {
					done <- got
					return
				}
				got = append(got, strings.TrimRight(l, "\r\n"))
			}
			sc.Write([]byte(strings.Join(st.replies, "")))
		}
		done <- got
	}()
	wc := &writeCounter{Conn: cc}
	c := NewClient(wc)
	c.CommandTimeout = 5 * time.Second
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	client(c, wc)
	cc.Close()
	return <-done
}

func TestMailRcptPipelined(t *testing.T) {
	got := runPipelineTest(t, "250-PIPELINING\r\n", []pipelineStep{
		// Both commands must arrive before any reply: a lock-step client
		// would wait for MAIL's reply here and time out.
		{read: 2, replies: []string{"250 2.1.0 ok\r\n", "250 2.1.5 ok\r\n"}},
	}, func(c *Client, wc *writeCounter) {
		before := wc.n.Load()
		mailErr, rcptErr := c.MailRcpt("a@example.org", nil, "b@example.org", nil)
		if mailErr != nil || rcptErr != nil {
			t.Fatalf("MailRcpt = %v, %v", mailErr, rcptErr)
		}
		if n := wc.n.Load() - before; n != 1 {
			t.Errorf("MAIL and RCPT took %d writes, want 1", n)
		}
	})
	want := []string{"MAIL FROM:<a@example.org>", "RCPT TO:<b@example.org>"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("server read %q, want %q", got, want)
	}
}

func TestMailRcptPipelinedMailRefused(t *testing.T) {
	runPipelineTest(t, "250-PIPELINING\r\n", []pipelineStep{
		{read: 2, replies: []string{"550 5.7.1 sender refused\r\n", "503 5.5.1 need MAIL\r\n"}},
		{read: 1, replies: []string{"250 2.0.0 reset\r\n"}},
	}, func(c *Client, wc *writeCounter) {
		mailErr, rcptErr := c.MailRcpt("a@example.org", nil, "b@example.org", nil)
		se, ok := mailErr.(*SMTPError)
		if !ok || se.Code != 550 || se.Message != "sender refused" {
			t.Fatalf("mailErr = %#v, want the 550", mailErr)
		}
		if rcptErr != nil {
			t.Errorf("rcptErr = %v, want nil after a refused MAIL", rcptErr)
		}
		// RCPT's 503 was consumed: the next command gets its own reply.
		if err := c.Reset(); err != nil {
			t.Errorf("RSET after a refused pipelined MAIL: %v", err)
		}
	})
}

func TestMailRcptPipelinedRcptRefused(t *testing.T) {
	runPipelineTest(t, "250-PIPELINING\r\n", []pipelineStep{
		{read: 2, replies: []string{"250 2.1.0 ok\r\n", "550 5.1.1 no such user\r\n"}},
	}, func(c *Client, wc *writeCounter) {
		mailErr, rcptErr := c.MailRcpt("a@example.org", nil, "b@example.org", nil)
		se, ok := rcptErr.(*SMTPError)
		if mailErr != nil || !ok || se.Code != 550 {
			t.Fatalf("MailRcpt = %v, %v; want nil, the 550", mailErr, rcptErr)
		}
	})
}

func TestMailRcptLockStep(t *testing.T) {
	// No PIPELINING: MAIL's reply comes before RCPT is sent, and a refused
	// MAIL means no RCPT at all.
	got := runPipelineTest(t, "", []pipelineStep{
		{read: 1, replies: []string{"250 2.1.0 ok\r\n"}},
		{read: 1, replies: []string{"550 5.1.1 no such user\r\n"}},
		{read: 1, replies: []string{"550 5.7.1 sender refused\r\n"}},
		{read: 1, replies: []string{"221 bye\r\n"}},
	}, func(c *Client, wc *writeCounter) {
		mailErr, rcptErr := c.MailRcpt("a@example.org", nil, "b@example.org", nil)
		if se, ok := rcptErr.(*SMTPError); mailErr != nil || !ok || se.Code != 550 {
			t.Fatalf("MailRcpt = %v, %v; want nil, the 550", mailErr, rcptErr)
		}
		mailErr, rcptErr = c.MailRcpt("a@example.org", nil, "b@example.org", nil)
		if se, ok := mailErr.(*SMTPError); !ok || se.Code != 550 || rcptErr != nil {
			t.Fatalf("MailRcpt = %v, %v; want the 550, nil", mailErr, rcptErr)
		}
		if err := c.Quit(); err != nil {
			t.Errorf("QUIT: %v", err)
		}
	})
	want := []string{"MAIL FROM:<a@example.org>", "RCPT TO:<b@example.org>", "MAIL FROM:<a@example.org>", "QUIT"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("server read %q, want %q", got, want)
	}
}
