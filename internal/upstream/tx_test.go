package upstream

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// scripted is a backend that accepts everything except the recipients in
// refuse, answered with the given reply, and stores the messages it gets.
func scripted(t *testing.T, refuse map[string]string) (addr string, got chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got = make(chan string, 10)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write([]byte("220 scripted ESMTP\r\n"))
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					cmd := strings.ToUpper(strings.TrimSpace(line))
					switch {
					case strings.HasPrefix(cmd, "EHLO"):
						c.Write([]byte("250-scripted\r\n250 PIPELINING\r\n"))
					case strings.HasPrefix(cmd, "RCPT"):
						reply := "250 2.1.5 Ok"
						for rcpt, r := range refuse {
							if strings.Contains(line, "<"+rcpt+">") {
								reply = r
							}
						}
						c.Write([]byte(reply + "\r\n"))
					case cmd == "DATA":
						c.Write([]byte("354 go ahead\r\n"))
						var msg strings.Builder
						for {
							l, err := r.ReadString('\n')
							if err != nil {
								return
							}
							if l == ".\r\n" {
								break
							}
							msg.WriteString(l)
						}
						got <- msg.String()
						c.Write([]byte("250-2.0.0 Ok:\r\n250 2.0.0 queued as 4XyZ\r\n"))
					case cmd == "QUIT":
						c.Write([]byte("221 bye\r\n"))
						return
					default:
						c.Write([]byte("250 2.0.0 Ok\r\n"))
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), got
}

func testConfig(addr string) Config {
	return Config{Address: addr, Hostname: "mx.test", Timeout: 3 * time.Second, DataDoneTimeout: 3 * time.Second,
		PoolSize: 4, PoolIdle: time.Minute, MaxConnections: 4, SpoolAfter: time.Minute}
}

// A refusal carries the backend's reply, typed by its class; the Tx goes
// on with the other recipients and Data returns the backend's 250 on one
// line, with the message dot-stuffed on the wire and unstuffed at the
// other end.
func TestTxRepliesTyped(t *testing.T) {
	addr, got := scripted(t, map[string]string{
		"nobody@example.org": "550 5.1.1 <nobody@example.org>: User unknown",
		"full@example.org":   "452-4.2.2 Mailbox full\r\n452 4.2.2 try later",
	})
	c := New(testConfig(addr), nil, nil)
	defer c.Drain()
	leg := c.Leg()
	defer leg.Close()
	tx := leg.Begin("carol@foreign.test", &smtp.MailOptions{}, Unauthenticated)
	ctx := context.Background()
	for to, want := range map[string]struct {
		code int
		temp bool
		text string
	}{
		"nobody@example.org": {550, false, "<nobody@example.org>: User unknown"},
		"full@example.org":   {452, true, "Mailbox full try later"},
	} {
		err := tx.Rcpt(ctx, to, nil)
		var ue *Error
		if !errors.As(err, &ue) || ue.Reply == nil {
			t.Fatalf("RCPT %s: %v, want an *Error with the backend's reply", to, err)
		}
		if ue.Stage != StageRcpt || ue.Reply.Code != want.code || ue.Temporary() != want.temp || ue.Reply.Message != want.text {
			t.Errorf("RCPT %s: stage %s, %d %q, temporary %v; want %d %q, temporary %v",
				to, ue.Stage, ue.Reply.Code, ue.Reply.Message, ue.Temporary(), want.code, want.text, want.temp)
		}
	}
	if err := tx.Rcpt(ctx, "alice@example.org", nil); err != nil {
		t.Fatalf("RCPT after refusals: %v", err)
	}
	res, err := tx.Data(ctx, "Received: test\r\n", strings.NewReader("Subject: x\r\n\r\n.dot\nend"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Reply.Code != 250 || res.Reply.EnhancedCode != (smtp.EnhancedCode{2, 0, 0}) || res.Reply.Message != "Ok: queued as 4XyZ" {
		t.Errorf("DATA reply %+v", res.Reply)
	}
	if msg := <-got; msg != "Received: test\r\nSubject: x\r\n\r\n..dot\r\nend\r\n" {
		t.Errorf("backend read %q", msg)
	}
}

// A backend that is not there is a temporary failure at connect, with no
// reply to show the client.
func TestTxBackendDownIsTemporary(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	c := New(testConfig(addr), nil, nil)
	tx := c.Leg().Begin("carol@foreign.test", &smtp.MailOptions{}, Unauthenticated)
	err = tx.Rcpt(context.Background(), "alice@example.org", nil)
	var ue *Error
	if !errors.As(err, &ue) || ue.Stage != StageConnect || ue.Reply != nil || !ue.Temporary() {
		t.Fatalf("RCPT with the backend down: %#v", err)
	}
	if tx.Broken() {
		t.Error("a failed connect broke the transaction; the next RCPT may try again")
	}
}

// Abort before DATA ends the transaction; nothing more is sent.
func TestTxAbort(t *testing.T) {
	addr, _ := scripted(t, nil)
	c := New(testConfig(addr), nil, nil)
	tx := c.Leg().Begin("carol@foreign.test", &smtp.MailOptions{}, Unauthenticated)
	if err := tx.Rcpt(context.Background(), "alice@example.org", nil); err != nil {
		t.Fatal(err)
	}
	tx.Abort()
	if _, err := tx.Data(context.Background(), "", strings.NewReader("x\r\n")); !errors.Is(err, ErrBroken) {
		t.Errorf("Data after Abort: %v, want ErrBroken", err)
	}
	if n := c.inUse(); n != 0 {
		t.Errorf("%d connections in use after Abort", n)
	}
}
