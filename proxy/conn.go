package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// conn wraps a client's TCP connection below TLS: the deadlines, the
// batching of replies and the byte counts. It enforces what go-smtp does
// not:
//
//   - outside a message, one deadline per command line: the command timeout
//     runs from when go-smtp starts reading the line, so a client that
//     trickles bytes without ever finishing a command is cut off all the
//     same (RFC 5321 4.5.3.2.7 bounds the wait for a command, not for each
//     byte of it);
//   - inside a message, a sliding idle deadline on every read, so a slow
//     but moving DATA upload is never cut off while a stalled one is
//     (go-smtp's ReadTimeout is one deadline for a whole DATA, issue #196);
//   - after a read timeout every later read fails at once, so a stalled DATA
//     can never resynchronise into commands;
//   - closeAfterReply: the next reply written is the last one.
//
// It stays below TLS (go-smtp detects TLS by a type check on *tls.Conn).
// What the connection means (who, the log line, slots) is its
// sessionRecord's, told through end when the connection closes.
type conn struct {
	net.Conn
	end connEnd

	idle      atomic.Int64 // current timeout in nanoseconds: per command line, or per read in a message
	writeIdle time.Duration

	wmu  sync.Mutex
	wbuf *[]byte // replies not yet sent; nil when empty (pooled)
	werr error   // sticky: a write failed, nothing more is sent

	mu          sync.Mutex
	readErr     error // sticky: set after a timeout
	lastReply   bool  // close after the next write
	bytesIn     int64
	bytesOut    int64
	closeOnce   sync.Once
	inData      bool // reading a message (DATA or BDAT)
	timeoutSaid bool // the timeout was reported once; later reads see EOF

	cmdDeadline time.Time // guarded by mu: when the command line being read must be complete
}

// connEnd is told, once, that a conn closes: released before the last held
// reply is sent, closed after the socket is closed.
type connEnd interface {
	released()
	closed()
}

func (c *conn) setIdle(d time.Duration) { c.idle.Store(int64(d)) }

// startCommand starts the clock for the next command line. c.mu is held.
func (c *conn) startCommand() {
	c.cmdDeadline = time.Time{}
	if d := time.Duration(c.idle.Load()); d > 0 {
		c.cmdDeadline = time.Now().Add(d)
	}
}

// startCommandWithin sets the timeout for command lines to d and starts its
// clock now, for the line being read or the next.
func (c *conn) startCommandWithin(d time.Duration) {
	c.mu.Lock()
	c.setIdle(d)
	c.startCommand()
	c.mu.Unlock()
}

// SetReadDeadline is how go-smtp (with Server.ReadTimeout set) says that it
// starts reading a line: a command, or a line of an AUTH exchange. The
// conn applies its own timeout from that moment (the command timeout, or
// the handshake's after STARTTLS), whatever deadline go-smtp computed.
func (c *conn) SetReadDeadline(time.Time) error {
	c.mu.Lock()
	c.startCommand()
	c.mu.Unlock()
	return nil
}

// setData marks whether a message is being read, with its idle timeout.
// Leaving a message starts a new command clock.
func (c *conn) setData(on bool, idle time.Duration) {
	c.setIdle(idle)
	c.mu.Lock()
	c.inData = on
	c.startCommand()
	c.mu.Unlock()
}

func (c *conn) Read(b []byte) (int, error) {
	if err := c.flush(); err != nil {
		return 0, err
	}
	c.mu.Lock()
	if c.readErr != nil {
		err := c.readErr
		if c.timeoutSaid {
			err = io.EOF // go-smtp has answered the timeout; just end
		}
		c.timeoutSaid = true
		c.mu.Unlock()
		return 0, err
	}
	deadline := c.cmdDeadline
	if c.inData {
		deadline = time.Time{}
		if d := time.Duration(c.idle.Load()); d > 0 {
			deadline = time.Now().Add(d)
		}
	}
	c.mu.Unlock()
	c.Conn.SetReadDeadline(deadline)
	n, err := c.Conn.Read(b)
	c.mu.Lock()
	c.bytesIn += int64(n)
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		// Sticky: nothing more is read from this client. Inside a message
		// the reply is ours (go-smtp would turn a BDAT read error into a
		// permanent 554 that leaks socket addresses), and later reads see
		// EOF. Outside, go-smtp answers its own 421 4.4.2 to the timeout;
		// later reads time out again, so that a timeout go-smtp drops
		// without a reply (inside an AUTH exchange) gets it at the next
		// command read.
		if c.inData {
			err = errStalledData
			c.timeoutSaid = true
		}
		c.readErr = err
	}
	c.mu.Unlock()
	return n, err
}

func (c *conn) Write(b []byte) (int, error) {
	c.mu.Lock()
	last := c.lastReply
	c.mu.Unlock()

	c.wmu.Lock()
	if c.werr != nil {
		err := c.werr
		c.wmu.Unlock()
		return 0, err
	}
	if c.wbuf == nil {
		c.wbuf = writeBufs.Get().(*[]byte)
	}
	*c.wbuf = append(*c.wbuf, b...)
	full := len(*c.wbuf) >= maxWriteBuf
	c.wmu.Unlock()
	if last {
		c.flush()
		c.Close()
		return len(b), nil
	}
	if full {
		if err := c.flush(); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

// Writes are held until the next read (or until maxWriteBuf): go-smtp
// writes each reply line on its own, and a server always reads after it
// has answered, so this turns a ten-line EHLO reply into one send without
// delaying any reply. The buffer is pooled and given back at each flush, so
// an idle session holds none.
const maxWriteBuf = 16 << 10

var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// flush sends the held writes. A failed write (a client that stopped
// reading, past write_timeout) is sticky: go-smtp ignores write errors and
// would go on answering the commands it has read, each answer waiting out
// another write_timeout. Instead the socket is closed at once, so the
// session's next read fails and it ends; later writes fail immediately.
func (c *conn) flush() error { return c.flushWithin(c.writeIdle) }

// flushWithin is flush with d (if positive) as the bound of the write.
func (c *conn) flushWithin(d time.Duration) error {
	c.wmu.Lock()
	if c.wbuf == nil || c.werr != nil {
		err := c.werr
		c.wmu.Unlock()
		return err
	}
	buf := c.wbuf
	c.wbuf = nil
	if d > 0 {
		c.Conn.SetWriteDeadline(time.Now().Add(d))
	}
	n, err := c.Conn.Write(*buf)
	if err != nil {
		c.werr = err
	}
	c.wmu.Unlock()
	c.mu.Lock()
	c.bytesOut += int64(n)
	c.mu.Unlock()
	if cap(*buf) <= 64<<10 {
		*buf = (*buf)[:0]
		writeBufs.Put(buf)
	}
	if err != nil {
		c.Conn.Close() // Close still releases the slot and logs the session
	}
	return err
}

// closeAfterReply makes the next reply the last one on this connection.
func (c *conn) closeAfterReply() {
	c.mu.Lock()
	c.lastReply = true
	c.mu.Unlock()
}

// byteCounts returns the bytes read from and written to the client so far.
func (c *conn) byteCounts() (in, out int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytesIn, c.bytesOut
}

// writeErr returns the error that stopped writes to the client, if any.
func (c *conn) writeErr() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.werr
}

// closeFlushTimeout bounds the last write to a client, sent after its
// session slots are given back (crypto/tls gives its close_notify as long).
const closeFlushTimeout = 5 * time.Second

// Close releases the connection's session slots (c.end.released), sends
// what is held, closes the connection once and has the session logged
// (c.end.closed). The slots go back before the last reply leaves: a client
// that reads its 221 and connects again at once must find its slot free,
// or a client that keeps exactly max_sessions_per_ip sessions would now and
// then be refused. That last write, no longer counted against any limit,
// gets a bound of its own.
func (c *conn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.end.released()
		d := closeFlushTimeout
		if c.writeIdle > 0 {
			d = min(d, c.writeIdle)
		}
		c.flushWithin(d)
		err = c.Conn.Close()
		c.end.closed()
	})
	return err
}

// timedOut reports whether a read on this connection ran past its deadline.
func (c *conn) timedOut() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readErr != nil
}
