package proxy

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/tlsguard/tlsguard/internal/upstream"
	"github.com/tlsguard/tlsguard/policy"
)

// The session judges and maps replies; these tests drive it against a fake
// backend leg, with no socket anywhere.

// fakeLeg records the transactions a session begins.
type fakeLeg struct {
	begun  []*fakeTx
	closed int
	script func(*fakeTx) // sets up each new transaction
}

func (l *fakeLeg) Begin(from string, opts *smtp.MailOptions, class upstream.Class) backendTx {
	tx := &fakeTx{from: from, class: class, rcptErr: map[string]error{}}
	if l.script != nil {
		l.script(tx)
	}
	l.begun = append(l.begun, tx)
	return tx
}

func (l *fakeLeg) Close() { l.closed++ }

// fakeTx answers as scripted and records what it was given.
type fakeTx struct {
	from      string
	class     upstream.Class
	rcpts     []string
	rcptErr   map[string]error // by recipient
	dataErr   error
	dataReply *smtp.SMTPError
	header    string
	body      string
	aborted   int
	broken    bool
}

func (t *fakeTx) Rcpt(_ context.Context, to string, _ *smtp.RcptOptions) error {
	if err := t.rcptErr[to]; err != nil {
		var ue *upstream.Error
		if errors.As(err, &ue) && ue.Reply == nil {
			t.broken = true
		}
		return err
	}
	t.rcpts = append(t.rcpts, to)
	return nil
}

func (t *fakeTx) Data(_ context.Context, header string, r io.Reader) (upstream.Result, error) {
	b, err := io.ReadAll(r)
	t.header, t.body = header, string(b)
	res := upstream.Result{Bytes: int64(len(b))}
	if err != nil {
		return res, err
	}
	if t.dataErr != nil {
		return res, t.dataErr
	}
	res.Reply, res.Latency = t.dataReply, time.Millisecond
	return res, nil
}

func (t *fakeTx) Abort()       { t.aborted++ }
func (t *fakeTx) Broken() bool { return t.broken }

// newUnitSession is a session on the mx listener of a Server that is never
// started, its backend leg the fake.
func newUnitSession(t *testing.T, leg *fakeLeg) *session {
	t.Helper()
	pol, err := policy.Parse("test.yaml", []byte("local_domains: [example.org]\ntrusted_networks: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{
		Hostname: "mail.example.org",
		Backend: BackendConfig{Address: "127.0.0.1:1", TLS: TLSNone, Timeout: time.Second, DataDoneTimeout: time.Second,
			SpoolAfter: time.Second, MaxConnections: 1},
		Limits: Limits{MaxMessageBytes: 1 << 20, MaxRecipients: 10, MaxLineLength: 2000, MaxSessions: 10, MaxSessionsPerIP: 10,
			CommandTimeout: time.Second, DataTimeout: time.Second, WriteTimeout: time.Second, HandshakeTimeout: time.Second,
			AuthMaxFailures: 3, AuthFailWindow: time.Minute, AuthUserMaxFailures: 50, AuthRemember: time.Hour, AuthMaxConcurrent: 1},
		Policy: pol,
	})
	if err != nil {
		t.Fatal(err)
	}
	return &session{srv: srv, lc: ListenerConfig{Name: "mx"}, conn: &sessionRecord{id: "unit1", ip: netip.MustParseAddr("192.0.2.7"), c: &conn{}},
		helo: "client.test", leg: leg}
}

func mail(t *testing.T, s *session, from string) {
	t.Helper()
	if err := s.Mail(from, &smtp.MailOptions{}); err != nil {
		t.Fatalf("MAIL FROM:<%s>: %v", from, err)
	}
}

func expectReply(t *testing.T, what string, err error, code int, ec smtp.EnhancedCode, text string) {
	t.Helper()
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		t.Fatalf("%s: %v, want %d %v %s", what, err, code, ec, text)
	}
	if se.Code != code || se.EnhancedCode != ec || (text != "" && se.Message != text) {
		t.Errorf("%s: %d %v %q, want %d %v %q", what, se.Code, se.EnhancedCode, se.Message, code, ec, text)
	}
}

// A recipient the policy refuses is answered without the backend: no
// transaction is begun for it.
func TestSessionRelayRefusedNeverOpensBackend(t *testing.T) {
	leg := &fakeLeg{}
	s := newUnitSession(t, leg)
	mail(t, s, "carol@foreign.test")
	expectReply(t, "RCPT to a foreign domain", s.Rcpt("dave@elsewhere.test", &smtp.RcptOptions{}), 550, smtp.EnhancedCode{5, 7, 1}, "")
	if len(leg.begun) != 0 {
		t.Fatalf("%d backend transactions begun for a refused recipient", len(leg.begun))
	}
	s.Logout()
}

// The first accepted recipient begins one backend transaction, from the
// client's sender and in the session's class; later ones join it.
func TestSessionFirstAcceptedRcptBeginsTx(t *testing.T) {
	leg := &fakeLeg{}
	s := newUnitSession(t, leg)
	mail(t, s, "carol@foreign.test")
	for _, to := range []string{"alice@example.org", "bob@example.org"} {
		if err := s.Rcpt(to, &smtp.RcptOptions{}); err != nil {
			t.Fatalf("RCPT TO:<%s>: %v", to, err)
		}
	}
	if len(leg.begun) != 1 {
		t.Fatalf("%d backend transactions begun, want 1", len(leg.begun))
	}
	tx := leg.begun[0]
	if tx.from != "carol@foreign.test" || tx.class != upstream.Unauthenticated {
		t.Errorf("begun from %q as %v", tx.from, tx.class)
	}
	if strings.Join(tx.rcpts, ",") != "alice@example.org,bob@example.org" {
		t.Errorf("backend got recipients %q", tx.rcpts)
	}
	// A logged-in user's transaction uses the authenticated class.
	s.Reset()
	s.user = "alice"
	mail(t, s, "alice@example.org")
	if err := s.Rcpt("dave@elsewhere.test", &smtp.RcptOptions{}); err != nil {
		t.Fatalf("RCPT of a logged-in user: %v", err)
	}
	if len(leg.begun) != 2 || leg.begun[1].class != upstream.Authenticated {
		t.Errorf("logged-in transaction not begun as authenticated: %+v", leg.begun)
	}
}

// The backend's refusal of a recipient reaches the client verbatim, and the
// transaction goes on with the others.
func TestSessionBackendRcptRefusalVerbatim(t *testing.T) {
	refusal := &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "<nobody@example.org>: Recipient address rejected: User unknown"}
	leg := &fakeLeg{script: func(tx *fakeTx) {
		tx.rcptErr["nobody@example.org"] = &upstream.Error{Stage: upstream.StageRcpt, Reply: refusal, Err: refusal}
	}}
	s := newUnitSession(t, leg)
	mail(t, s, "carol@foreign.test")
	expectReply(t, "refused RCPT", s.Rcpt("nobody@example.org", &smtp.RcptOptions{}), refusal.Code, refusal.EnhancedCode, refusal.Message)
	if err := s.Rcpt("alice@example.org", &smtp.RcptOptions{}); err != nil {
		t.Fatalf("RCPT after a refused one: %v", err)
	}
	if len(leg.begun) != 1 {
		t.Errorf("%d backend transactions, want 1", len(leg.begun))
	}
}

// End of DATA answers with the backend's own 250 text; the message went
// through with the trace header before it.
func TestSessionDataReturnsBackend250(t *testing.T) {
	ok := &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as 4XyZ12"}
	leg := &fakeLeg{script: func(tx *fakeTx) { tx.dataReply = ok }}
	s := newUnitSession(t, leg)
	mail(t, s, "carol@foreign.test")
	if err := s.Rcpt("alice@example.org", &smtp.RcptOptions{}); err != nil {
		t.Fatal(err)
	}
	msg := "Subject: unit\r\n\r\nbody\r\n"
	expectReply(t, "end of DATA", s.Data(strings.NewReader(msg)), 250, smtp.EnhancedCode{2, 0, 0}, ok.Message)
	tx := leg.begun[0]
	if tx.body != msg || !strings.HasPrefix(tx.header, "Received: from client.test ([192.0.2.7])") {
		t.Errorf("backend got header %q body %q", tx.header, tx.body)
	}
	// The transaction is over: a new one begins at the next accepted RCPT.
	mail(t, s, "carol@foreign.test")
	if err := s.Rcpt("alice@example.org", &smtp.RcptOptions{}); err != nil || len(leg.begun) != 2 {
		t.Errorf("second transaction: %v, %d begun", err, len(leg.begun))
	}
}

// A backend that fails without a reply of its own (unreachable, gone, timed
// out) gives the client 451 4.4.1, at RCPT and at the end of DATA; the
// underlying error never reaches the client.
func TestSessionBackendTempFailure(t *testing.T) {
	want := smtp.EnhancedCode{4, 4, 1}
	down := &upstream.Error{Stage: upstream.StageConnect, Err: errors.New("backend 127.0.0.1:1: connection refused")}
	leg := &fakeLeg{script: func(tx *fakeTx) { tx.rcptErr["alice@example.org"] = down }}
	s := newUnitSession(t, leg)
	mail(t, s, "carol@foreign.test")
	err := s.Rcpt("alice@example.org", &smtp.RcptOptions{})
	expectReply(t, "RCPT, backend down", err, 451, want, errBackendFailed.Message)

	lost := &upstream.Error{Stage: upstream.StageData, Err: io.ErrUnexpectedEOF}
	leg = &fakeLeg{script: func(tx *fakeTx) { tx.dataErr = lost }}
	s = newUnitSession(t, leg)
	mail(t, s, "carol@foreign.test")
	if err := s.Rcpt("alice@example.org", &smtp.RcptOptions{}); err != nil {
		t.Fatal(err)
	}
	expectReply(t, "DATA, backend gone", s.Data(strings.NewReader("Subject: x\r\n\r\nx\r\n")), 451, want, errBackendFailed.Message)

	// A backend that failed at RCPT breaks the transaction: later recipients
	// get 451 4.4.1 without the backend being asked again.
	rcptLost := &upstream.Error{Stage: upstream.StageRcpt, Err: io.ErrUnexpectedEOF}
	leg = &fakeLeg{script: func(tx *fakeTx) { tx.rcptErr["alice@example.org"] = rcptLost }}
	s = newUnitSession(t, leg)
	mail(t, s, "carol@foreign.test")
	expectReply(t, "RCPT, backend lost", s.Rcpt("alice@example.org", &smtp.RcptOptions{}), 451, want, errBackendFailed.Message)
	expectReply(t, "RCPT after the loss", s.Rcpt("bob@example.org", &smtp.RcptOptions{}), 451, want, errTxBroken.Message)
	if got := leg.begun[0].rcpts; len(got) != 0 {
		t.Errorf("backend asked for %q after it failed", got)
	}
}

// RSET and the end of the session abort an open backend transaction; the
// end of the session also closes the leg.
func TestSessionResetAndLogoutAbortTx(t *testing.T) {
	leg := &fakeLeg{}
	s := newUnitSession(t, leg)
	mail(t, s, "carol@foreign.test")
	if err := s.Rcpt("alice@example.org", &smtp.RcptOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Reset()
	if leg.begun[0].aborted != 1 {
		t.Errorf("RSET aborted the backend transaction %d times, want 1", leg.begun[0].aborted)
	}
	mail(t, s, "carol@foreign.test")
	if err := s.Rcpt("alice@example.org", &smtp.RcptOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Logout()
	if leg.begun[1].aborted != 1 || leg.closed != 1 {
		t.Errorf("QUIT: transaction aborted %d times, leg closed %d times; want 1, 1", leg.begun[1].aborted, leg.closed)
	}
	if leg.begun[0].aborted != 1 {
		t.Errorf("the first transaction was aborted again")
	}
}
