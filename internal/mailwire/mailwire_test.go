package mailwire

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/tlsguard/tlsguard/internal/smtpwire"
)

const (
	user = "alice"
	pass = "s3cret pass"
	// plainAlice is plainResponse(user, pass).
	plainAlice = "AGFsaWNlAHMzY3JldCBwYXNz"
)

// fake is the server end of one connection, driven by a test's script.
type fake struct {
	t   *testing.T
	c   net.Conn
	r   *bufio.Reader
	tls *tls.Config
}

// serve runs script on the first connection to a loopback listener and
// returns the listener's address; the test ends after the script.
func serve(t *testing.T, script func(f *fake)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	srvTLS, _ := testTLS(t)
	go func() {
		defer close(done)
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		script(&fake{t: t, c: c, r: bufio.NewReader(c), tls: srvTLS})
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().String()
}

// testTLS is a server and a client TLS configuration that trust each other.
func testTLS(t *testing.T) (server, client *tls.Config) {
	ts := httptest.NewTLSServer(http.NotFoundHandler())
	defer ts.Close()
	return ts.TLS, ts.Client().Transport.(*http.Transport).TLSClientConfig
}

func (f *fake) send(s string) { f.c.Write([]byte(s)) }

// expect reads one line and checks it is want.
func (f *fake) expect(want string) {
	l, err := f.r.ReadString('\n')
	if got := strings.TrimSuffix(l, "\r\n"); err != nil || got != want {
		f.t.Errorf("server read %q (%v), want %q", got, err, want)
	}
}

// startTLS takes the server side of a TLS handshake.
func (f *fake) startTLS() {
	tc := tls.Server(f.c, f.tls)
	if err := tc.Handshake(); err != nil {
		f.t.Errorf("server handshake: %v", err)
	}
	f.c, f.r = tc, bufio.NewReader(tc)
}

func config(addr, mode string, t *testing.T) Config {
	_, client := testTLS(t)
	client = client.Clone()
	client.ServerName = "127.0.0.1" // in httptest's certificate
	return Config{Address: addr, TLS: mode, TLSConfig: client, Timeout: 5 * time.Second}
}

// A CAPABILITY response code in the greeting spares the CAPABILITY command;
// AUTH=PLAIN with SASL-IR puts the response on the command line; the
// untagged responses to the login and its tagged OK come back for the
// client, and what the server sent after them waits in the reader.
func TestIMAPGreetingCapabilitiesAndPlain(t *testing.T) {
	addr := serve(t, func(f *fake) {
		f.send("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\n")
		f.expect("a3 AUTHENTICATE PLAIN " + plainAlice)
		f.send("* CAPABILITY IMAP4rev1 IDLE\r\na3 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n* 3 EXISTS\r\n")
		f.expect("a9 LOGOUT")
	})
	c, l, err := LoginIMAP(context.Background(), config(addr, TLSNone, t), user, pass)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Untagged) != 1 || l.Untagged[0] != "* CAPABILITY IMAP4rev1 IDLE" || l.OK != "OK [CAPABILITY IMAP4rev1 IDLE] Logged in" {
		t.Errorf("login %+v", l)
	}
	_, r := c.Detach()
	if b, _ := r.Peek(r.Buffered()); string(b) != "* 3 EXISTS\r\n" {
		t.Errorf("pending %q", b)
	}
	c.Logout()
}

// Without a capability list in the greeting, CAPABILITY is asked; without
// AUTH=PLAIN, LOGIN carries both arguments as literals, non-synchronising
// under LITERAL+ (RFC 7888), else each after the server's "+".
func TestIMAPLoginLiterals(t *testing.T) {
	for _, tc := range []struct {
		caps   string
		script func(f *fake)
	}{
		{"IMAP4rev1 LITERAL+", func(f *fake) {
			f.expect("a3 LOGIN {5+}")
			f.expect("alice {11+}")
			f.expect(pass)
		}},
		{"IMAP4rev1", func(f *fake) {
			f.expect("a3 LOGIN {5}")
			f.send("+ go on\r\n")
			f.expect("alice {11}")
			f.send("+ go on\r\n")
			f.expect(pass)
		}},
	} {
		addr := serve(t, func(f *fake) {
			f.send("* OK hello\r\n")
			f.expect("a2 CAPABILITY")
			f.send("* CAPABILITY " + tc.caps + "\r\na2 OK done\r\n")
			tc.script(f)
			f.send("a3 OK done\r\n")
		})
		c, l, err := LoginIMAP(context.Background(), config(addr, TLSNone, t), user, pass)
		if err != nil || l.OK != "OK done" {
			t.Fatalf("%s: %+v, %v", tc.caps, l, err)
		}
		c.Close()
	}
}

// STARTTLS and STLS: capabilities are asked again inside TLS (RFC 9051
// 6.2.1), and what the server sent in plaintext behind its OK is dropped.
func TestStartTLS(t *testing.T) {
	addr := serve(t, func(f *fake) {
		f.send("* OK [CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED] ready\r\n")
		f.expect("a1 STARTTLS")
		f.send("a1 OK go\r\n* CAPABILITY IMAP4rev1 LOGINDISABLED\r\na2 OK\r\n") // if read as from inside TLS: no login
		f.startTLS()
		f.expect("a2 CAPABILITY")
		f.send("* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na2 OK\r\n")
		f.expect("a3 AUTHENTICATE PLAIN")
		f.send("+ \r\n")
		f.expect(plainAlice)
		f.send("a3 OK in\r\n")
	})
	c, l, err := LoginIMAP(context.Background(), config(addr, TLSStartTLS, t), user, pass)
	if err != nil || l.OK != "OK in" {
		t.Fatalf("IMAP: %+v, %v", l, err)
	}
	c.Close()

	addr = serve(t, func(f *fake) {
		f.send("+OK ready\r\n")
		f.expect("STLS")
		f.send("+OK go\r\n+OK\r\n.\r\n") // if read as from inside TLS: an empty CAPA
		f.startTLS()
		f.expect("CAPA")
		f.send("+OK\r\nUSER\r\nSASL PLAIN LOGIN\r\n.\r\n")
		f.expect("AUTH PLAIN " + plainAlice)
		f.send("+OK in\r\n")
		f.expect("QUIT")
	})
	c, l, err = LoginPOP3(context.Background(), config(addr, TLSStartTLS, t), user, pass)
	if err != nil || l.OK != "+OK in" {
		t.Fatalf("POP3: %+v, %v", l, err)
	}
	c.Logout()
}

// Implicit TLS: the greeting comes inside TLS.
func TestImplicitTLS(t *testing.T) {
	addr := serve(t, func(f *fake) {
		f.startTLS()
		f.send("+OK ready\r\n")
		f.expect("CAPA")
		f.send("-ERR no CAPA here\r\n")
		f.expect("USER alice")
		f.send("+OK\r\n")
		f.expect("PASS " + pass)
		f.send("+OK in\r\n")
	})
	c, _, err := LoginPOP3(context.Background(), config(addr, TLSImplicit, t), user, pass)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// The server's refusal of the credentials is ErrRefused; a refusal that
// says the server cannot check them now, a refusal of anything else, a
// broken greeting and a server that is not there are other errors, which
// callers make temporary. No error carries the password.
func TestRefusedOrUnavailable(t *testing.T) {
	imapPlain := func(answer string) func(f *fake) {
		return func(f *fake) {
			f.send("* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] ready\r\n")
			f.expect("a3 AUTHENTICATE PLAIN " + plainAlice)
			f.send(answer)
		}
	}
	pop3Pass := func(answer string) func(f *fake) {
		return func(f *fake) {
			f.send("+OK\r\n")
			f.expect("CAPA")
			f.send("+OK\r\nUSER\r\n.\r\n")
			f.expect("USER alice")
			f.send("+OK\r\n")
			f.expect("PASS " + pass)
			f.send(answer)
		}
	}
	for _, tc := range []struct {
		name    string
		pop3    bool
		script  func(f *fake)
		refused bool
	}{
		{"imap NO", false, imapPlain("a3 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"), true},
		{"imap NO UNAVAILABLE", false, imapPlain("a3 NO [UNAVAILABLE] Try later.\r\n"), false},
		{"imap NO SERVERBUG", false, imapPlain("a3 NO [SERVERBUG] Oops.\r\n"), false},
		{"imap BAD", false, imapPlain("a3 BAD what?\r\n"), false},
		{"imap NO to a literal", false, func(f *fake) {
			f.send("* OK [CAPABILITY IMAP4rev1] ready\r\n")
			f.expect("a3 LOGIN {5}")
			f.send("a3 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
		}, true},
		{"imap NO to STARTTLS", false, func(f *fake) {
			f.send("* OK ready\r\n")
			f.expect("a1 STARTTLS")
			f.send("a1 NO not now\r\n")
		}, false},
		{"imap NO before the PLAIN response", false, func(f *fake) {
			f.send("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
			f.expect("a3 AUTHENTICATE PLAIN")
			f.send("a3 NO no PLAIN today\r\n")
		}, false},
		{"imap LOGINDISABLED", false, func(f *fake) { f.send("* OK [CAPABILITY IMAP4rev1 LOGINDISABLED] ready\r\n") }, false},
		{"imap greeting", false, func(f *fake) { f.send("* BYE busy\r\n") }, false},
		{"imap BYE at login", false, imapPlain("* BYE going down\r\n"), false},
		{"pop3 -ERR", true, pop3Pass("-ERR [AUTH] Authentication failed.\r\n"), true},
		{"pop3 -ERR SYS/TEMP", true, pop3Pass("-ERR [SYS/TEMP] Try later.\r\n"), false},
		{"pop3 -ERR to USER", true, func(f *fake) {
			f.send("+OK\r\n")
			f.expect("CAPA")
			f.send("-ERR\r\n")
			f.expect("USER alice")
			f.send("-ERR [AUTH] no\r\n")
		}, true},
		{"pop3 -ERR to STLS", true, func(f *fake) {
			f.send("+OK\r\n")
			f.expect("STLS")
			f.send("-ERR no TLS\r\n")
		}, false},
		{"pop3 greeting", true, func(f *fake) { f.send("-ERR busy\r\n") }, false},
		{"pop3 not POP3", true, pop3Pass("220 smtp.example ESMTP\r\n"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := serve(t, tc.script)
			mode := TLSNone
			if strings.Contains(tc.name, "STARTTLS") || strings.Contains(tc.name, "STLS") {
				mode = TLSStartTLS
			}
			login := LoginIMAP
			if tc.pop3 {
				login = LoginPOP3
			}
			_, _, err := login(context.Background(), config(addr, mode, t), user, pass)
			if err == nil || errors.Is(err, ErrRefused) != tc.refused {
				t.Errorf("err %v, want refused %v", err, tc.refused)
			}
			if err != nil && strings.Contains(err.Error(), pass) {
				t.Errorf("the error carries the password: %v", err)
			}
		})
	}
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	dead.Close()
	if _, _, err := LoginIMAP(context.Background(), config(dead.Addr().String(), TLSNone, t), user, pass); err == nil || errors.Is(err, ErrRefused) {
		t.Errorf("server down: %v", err)
	}
}

// Credentials no login can carry are refused without asking the server:
// a NUL anywhere, CR or LF for POP3's USER/PASS.
func TestCredentialsNoLoginCarries(t *testing.T) {
	if _, _, err := LoginIMAP(context.Background(), Config{Address: "127.0.0.1:1", TLS: TLSNone, Timeout: time.Second}, user, "a\x00b"); !errors.Is(err, ErrRefused) {
		t.Errorf("NUL: %v", err)
	}
	addr := serve(t, func(f *fake) {
		f.send("+OK\r\n")
		f.expect("CAPA")
		f.send("+OK\r\nUSER\r\n.\r\n")
		if l, err := f.r.ReadString('\n'); err == nil {
			f.t.Errorf("server read %q", l)
		}
	})
	if _, _, err := LoginPOP3(context.Background(), config(addr, TLSNone, t), user, "pw\r\nDELE 1"); !errors.Is(err, ErrRefused) {
		t.Errorf("CR LF: %v", err)
	}
}

// A silent server fails the login at the step timeout, or at the login
// context's deadline when it comes first; neither is a refusal.
func TestTimeout(t *testing.T) {
	silent := func(f *fake) {
		f.send("* OK ready\r\n")
		f.expect("a2 CAPABILITY")
		f.r.ReadString('\n') // until the client gives up
	}
	cfg := config(serve(t, silent), TLSNone, t)
	cfg.Timeout = 100 * time.Millisecond
	if _, _, err := LoginIMAP(context.Background(), cfg, user, pass); !errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ErrRefused) {
		t.Errorf("step timeout: %v", err)
	}
	cfg = config(serve(t, silent), TLSNone, t)
	cfg.Timeout = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, _, err := LoginIMAP(ctx, cfg, user, pass); !errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, ErrRefused) {
		t.Errorf("context deadline: %v", err)
	}
}

// A line over maxLine, or a response that never ends, fails the login.
func TestBounds(t *testing.T) {
	addr := serve(t, func(f *fake) { f.send("* OK " + strings.Repeat("x", maxLine) + "\r\n") })
	if _, _, err := LoginIMAP(context.Background(), config(addr, TLSNone, t), user, pass); !errors.Is(err, smtpwire.ErrLineTooLong) {
		t.Errorf("long greeting: %v", err)
	}
	addr = serve(t, func(f *fake) {
		f.send("* OK ready\r\n")
		f.expect("a2 CAPABILITY")
		f.send(strings.Repeat("* CAPABILITY IMAP4rev1\r\n", maxLines+1))
	})
	if _, _, err := LoginIMAP(context.Background(), config(addr, TLSNone, t), user, pass); err == nil || errors.Is(err, ErrRefused) {
		t.Errorf("endless response: %v", err)
	}
	addr = serve(t, func(f *fake) {
		f.send("+OK\r\n")
		f.expect("CAPA")
		f.send("+OK\r\n" + strings.Repeat("USER\r\n", maxLines+1))
	})
	if _, _, err := LoginPOP3(context.Background(), config(addr, TLSNone, t), user, pass); err == nil || errors.Is(err, ErrRefused) {
		t.Errorf("endless CAPA: %v", err)
	}
}
