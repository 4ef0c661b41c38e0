package mailbox

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/tlsguard/tlsguard/internal/auth"
)

// errLineTooLong ends a session whose command line does not fit maxLine.
var errLineTooLong = errors.New("line too long")

// session is one client connection, before and after login.
type session struct {
	srv   *Server
	c     Conn
	start time.Time

	conn net.Conn      // the client connection (a *tls.Conn once TLS is up)
	r    *bufio.Reader // reads conn; replaced (pipelined bytes dropped) after STARTTLS
	tls  string        // TLS version, "" before TLS

	wmu    sync.Mutex
	lastLF bool // the last byte sent to the client ended a line

	mu       sync.Mutex
	backend  net.Conn
	user     string
	end      string // how the session ended, for the log and metrics
	bad      int
	bytesIn  atomic.Int64
	bytesOut atomic.Int64
	loggedIn bool
	async    bool // the copy goroutines finish the session
}

func newSession(s *Server, c Conn) *session {
	ss := &session{srv: s, c: c, start: time.Now(), conn: c.Conn, lastLF: true}
	ss.r = bufio.NewReaderSize(ss.conn, maxLine)
	return ss
}

// run speaks the protocol up to login; true means the copy after login
// runs on and will finish the session.
func (ss *session) run() bool {
	ss.srv.cfg.Metrics.open.WithLabelValues(string(ss.c.Protocol)).Inc()
	if ss.c.Implicit {
		if !ss.handshake(ss.c.Conn) {
			return false
		}
	}
	switch ss.c.Protocol {
	case IMAP:
		ss.imap()
	case POP3:
		ss.pop3()
	}
	return ss.async
}

// handshake starts TLS on raw, bounded by the handshake timeout.
func (ss *session) handshake(raw net.Conn) bool {
	tc, ok := raw.(*tls.Conn)
	if !ok {
		tc = tls.Server(raw, ss.srv.cfg.TLS)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ss.srv.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		ss.setEnd("tls_failed")
		ss.srv.log.Debug("TLS handshake failed", zap.String("session", ss.c.ID), zap.String("listener", ss.c.Listener), zap.Error(err))
		return false
	}
	ss.wmu.Lock() // goodbye may write from another goroutine
	ss.conn = tc
	ss.wmu.Unlock()
	// A new reader: bytes the client sent behind STARTTLS, in plaintext,
	// are dropped with the old one (RFC 9051 6.2.1, RFC 2595 4: the
	// injection class of CVE-2011-0411).
	ss.r = bufio.NewReaderSize(tc, maxLine)
	ss.tls = tlsVersion(tc.ConnectionState().Version)
	return true
}

func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "1.3"
	case tls.VersionTLS12:
		return "1.2"
	}
	return "old"
}

// readLine reads one line before login, within the command timeout, and
// returns it without its CRLF (or LF).
func (ss *session) readLine() ([]byte, error) {
	ss.conn.SetReadDeadline(time.Now().Add(ss.srv.cfg.CommandTimeout))
	line, err := ss.r.ReadSlice('\n')
	ss.bytesIn.Add(int64(len(line)))
	if errors.Is(err, bufio.ErrBufferFull) {
		return nil, errLineTooLong
	}
	if err != nil {
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

// readFull reads n bytes (a literal) before login.
func (ss *session) readFull(n int) ([]byte, error) {
	ss.conn.SetReadDeadline(time.Now().Add(ss.srv.cfg.CommandTimeout))
	b := make([]byte, n)
	_, err := io.ReadFull(ss.r, b)
	ss.bytesIn.Add(int64(n))
	return b, err
}

// reply sends s to the client, whole, within the write timeout.
func (ss *session) reply(s string) error {
	_, err := ss.write([]byte(s))
	return err
}

func (ss *session) write(b []byte) (int, error) {
	ss.wmu.Lock()
	defer ss.wmu.Unlock()
	return ss.writeLocked(b)
}

func (ss *session) writeLocked(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	ss.conn.SetWriteDeadline(time.Now().Add(ss.srv.cfg.WriteTimeout))
	n, err := ss.conn.Write(b)
	ss.bytesOut.Add(int64(n))
	if n > 0 {
		ss.lastLF = b[n-1] == '\n'
	}
	return n, err
}

// clientWriter is the client side of the copy: every write takes the lock
// that goodbye takes, so the goodbye never lands inside a TLS record.
type clientWriter struct{ ss *session }

func (w clientWriter) Write(b []byte) (int, error) { return w.ss.write(b) }

// goodbye tells the client the server is going away and closes both legs.
// It starts on a line of its own.
func (ss *session) goodbye() {
	ss.setEnd("shutdown")
	ss.wmu.Lock()
	ss.conn.SetWriteDeadline(time.Now().Add(time.Second))
	msg := "* BYE Server shutting down, try again later\r\n"
	if ss.c.Protocol == POP3 {
		msg = "-ERR [SYS/TEMP] Server shutting down, try again later\r\n"
	}
	if !ss.lastLF {
		msg = "\r\n" + msg
	}
	ss.writeLocked([]byte(msg))
	ss.wmu.Unlock()
	ss.closeAll()
}

// closeAll closes the client and backend connections, which ends any copy.
// The client's TCP connection is closed below TLS: a close_notify would
// have to wait for a write in progress.
func (ss *session) closeAll() {
	ss.c.Conn.Close()
	ss.mu.Lock()
	b := ss.backend
	ss.mu.Unlock()
	if b != nil {
		b.Close()
	}
}

// setEnd records how the session ended; the first reason stays.
func (ss *session) setEnd(end string) {
	ss.mu.Lock()
	if ss.end == "" {
		ss.end = end
	}
	ss.mu.Unlock()
}

func isTimeout(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }

// endFromError names a read error for the log.
func (ss *session) endFromError(err error) {
	switch {
	case errors.Is(err, errLineTooLong):
		ss.setEnd("protocol_error")
	case errors.Is(err, os.ErrDeadlineExceeded):
		ss.setEnd("timeout")
	default:
		ss.setEnd("client_closed")
	}
}

// finish closes everything, writes the session's log line and tells the
// listener the session is over.
func (ss *session) finish() {
	ss.closeAll()
	ss.srv.cfg.Metrics.open.WithLabelValues(string(ss.c.Protocol)).Dec()
	defer ss.srv.remove(ss)
	ss.setEnd("client_closed")
	ss.mu.Lock()
	end, user := ss.end, ss.user
	ss.mu.Unlock()
	m := ss.srv.cfg.Metrics
	m.sessions.WithLabelValues(ss.c.Listener, string(ss.c.Protocol), end).Inc()
	tlsField := ss.tls
	if tlsField == "" {
		tlsField = "none"
	}
	ss.srv.log.Info("mailbox session", zap.String("session", ss.c.ID), zap.String("listener", ss.c.Listener),
		zap.String("protocol", string(ss.c.Protocol)), zap.Stringer("client_ip", ss.c.ClientIP), zap.String("user", user),
		zap.String("tls", tlsField), zap.Int64("bytes_in", ss.bytesIn.Load()), zap.Int64("bytes_out", ss.bytesOut.Load()),
		zap.Duration("duration_ms", time.Since(ss.start)), zap.String("end", end))
}

// login is the outcome of a login attempt for a protocol to answer.
type login int

const (
	loginOK       login = iota
	loginFailed         // answer "failed" and go on
	loginHangUp         // answer "failed" and close
	loginTryLater       // answer a temporary failure and go on
)

// check runs the credentials through the throttle and the sources, waits
// the failure delay where due, and logs the attempt (never the password).
func (ss *session) check(mech, identity, user, pass string) login {
	cfg := ss.srv.cfg
	log := ss.srv.log.With(zap.String("session", ss.c.ID), zap.String("listener", ss.c.Listener),
		zap.String("protocol", string(ss.c.Protocol)), zap.Stringer("client_ip", ss.c.ClientIP),
		zap.String("mechanism", mech), zap.String("user", user))
	count := func(result string) {
		cfg.Metrics.logins.WithLabelValues(ss.c.Listener, string(ss.c.Protocol), mech, result).Inc()
	}
	var src auth.Source
	if cfg.Auth != nil {
		src = cfg.Auth()
	}
	if src == nil {
		count("error")
		log.Error("login refused: no auth sources configured")
		return loginTryLater
	}
	if cfg.Throttle.Blocked(auth.AddrKey(ss.c.ClientIP)) {
		count("throttled")
		log.Warn("login refused", zap.String("reason", "address throttled"), zap.Bool("password_checked", false))
		return loginHangUp
	}
	o := cfg.Throttle.Login(context.Background(), cfg.Backend.Timeout+5*time.Second, src, ss.c.ClientIP, identity, user, pass)
	if o.Source != "" {
		log = log.With(zap.String("source", o.Source))
	}
	switch o.Verdict {
	case auth.LoginOK:
		count("success")
		log.Info("login succeeded", zap.Bool("password_checked", true), zap.Bool("known_address", o.Known))
		ss.mu.Lock()
		ss.user = user
		ss.mu.Unlock()
		return loginOK
	case auth.LoginFailed, auth.LoginFailedOver:
		count("failure")
		log.Warn("login failed", zap.String("reason", o.Reason), zap.Bool("password_checked", o.Checked),
			zap.Bool("throttled", o.Verdict == auth.LoginFailedOver))
		time.Sleep(cfg.AuthFailDelay)
		if o.Verdict == auth.LoginFailedOver {
			ss.setEnd("throttled")
			return loginHangUp
		}
		return loginFailed
	case auth.LoginRefusedHangUp:
		count("throttled")
		log.Warn("login refused", zap.String("reason", o.Reason), zap.Bool("password_checked", false))
		ss.setEnd("throttled")
		return loginHangUp
	case auth.LoginRefused:
		count("throttled")
		log.Warn("login refused", zap.String("reason", o.Reason), zap.Bool("password_checked", false))
		time.Sleep(cfg.AuthFailDelay)
		return loginTryLater
	case auth.LoginBusy:
		count("busy")
		log.Warn("login refused", zap.String("reason", o.Reason), zap.Bool("password_checked", false))
		return loginTryLater
	}
	count("error")
	log.Error("login check failed", zap.Error(o.Err))
	return loginTryLater
}

// splice copies bytes both ways between the logged-in client and backend
// until either side ends or stays silent for idle. Bytes the client sent
// behind its login are in ss.r and go first; likewise br for the backend.
// The copy runs in two new goroutines, and the session's own goroutine
// (whose stack grew through TLS handshakes and the login) ends; the last
// copy to stop finishes the session.
func (ss *session) splice(backend net.Conn, br *bufio.Reader, idle time.Duration) {
	ss.mu.Lock()
	ss.loggedIn = true
	ss.mu.Unlock()
	ss.async = true
	proto := string(ss.c.Protocol)
	m := ss.srv.cfg.Metrics
	cr, client := ss.r, ss.conn
	ss.r = nil // the copy drains and drops the readers
	var left atomic.Int32
	left.Store(2)
	done := func() {
		ss.closeAll()
		if left.Add(-1) == 0 {
			ss.finish()
		}
	}
	go func() {
		defer done()
		n, err := copyIdle(clientWriter{ss}, br, backend, idle)
		m.bytes.WithLabelValues(proto, "out").Add(float64(n))
		ss.endSplice(err, "backend_error")
	}()
	go func() {
		defer done()
		n, err := copyIdle(deadlineWriter{backend, ss.srv.cfg.Backend.Timeout}, cr, client, idle)
		ss.bytesIn.Add(n)
		m.bytes.WithLabelValues(proto, "in").Add(float64(n))
		ss.endSplice(err, "client_error")
	}()
}

// endSplice names how the copy ended: either side closing cleanly (the
// usual end of LOGOUT or QUIT) is "logout", silence past the idle limit is
// "timeout", anything else failed on one side. The first to end decides.
func (ss *session) endSplice(err error, failed string) {
	switch {
	case err == nil:
		ss.setEnd("logout")
	case isTimeout(err):
		ss.setEnd("timeout")
	default:
		ss.setEnd(failed)
	}
}

// copyBufs hold bytes only while they move from one leg to the other.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

// longAgo is a read deadline in the past: a read then returns only what
// is already at hand.
var longAgo = time.Unix(1, 0)

// copyIdle copies from conn to w, what pending holds first, sliding conn's
// read deadline by idle before each wait. While it waits it holds no
// buffer, so a session idle for 30 minutes (IMAP IDLE) costs little more
// than its connections: on a TCP connection it waits until the socket is
// readable (waitReadable); on TLS it reads one byte, after which the rest
// of the record is already decrypted and read with a deadline in the past.
// A buffer from copyBufs carries each burst.
func copyIdle(w io.Writer, pending *bufio.Reader, conn net.Conn, idle time.Duration) (int64, error) {
	var total int64
	if n := pending.Buffered(); n > 0 {
		b, _ := pending.Peek(n)
		if _, err := w.Write(b); err != nil {
			return 0, err
		}
		total = int64(n)
	}
	rc := rawConn(conn)
	_, plainTCP := conn.(*net.TCPConn)
	holdWhileIdle := rc == nil && plainTCP // where waitReadable is missing
	var one [1]byte
	for {
		conn.SetReadDeadline(time.Now().Add(idle))
		head := 0
		switch {
		case holdWhileIdle:
		case rc != nil:
			if err := waitReadable(rc); err != nil {
				return total, err
			}
		default:
			n, err := conn.Read(one[:])
			if n == 0 {
				if err == io.EOF {
					return total, nil
				}
				if err != nil {
					return total, err
				}
				continue
			}
			head = 1
			conn.SetReadDeadline(longAgo)
		}
		bp := copyBufs.Get().(*[]byte)
		buf := *bp
		buf[0] = one[0]
		n, err := conn.Read(buf[head:])
		if head == 1 && isTimeout(err) {
			err = nil // nothing more at hand
		}
		if n += head; n > 0 {
			_, werr := w.Write(buf[:n])
			total += int64(n)
			if werr != nil {
				copyBufs.Put(bp)
				return total, werr
			}
		}
		copyBufs.Put(bp)
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// rawConn is conn's file descriptor access when it is a plain TCP
// connection, for waitReadable; nil for TLS (and other wrappers).
func rawConn(conn net.Conn) syscall.RawConn {
	tc, ok := conn.(*net.TCPConn)
	if !ok || !canWaitReadable {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// deadlineWriter bounds each write to the backend.
type deadlineWriter struct {
	c net.Conn
	d time.Duration
}

func (w deadlineWriter) Write(b []byte) (int, error) {
	w.c.SetWriteDeadline(time.Now().Add(w.d))
	return w.c.Write(b)
}
