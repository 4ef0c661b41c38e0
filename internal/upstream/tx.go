package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Leg is one client session's use of the backend. Without a pool
// (PoolSize 0) it keeps its connection from one transaction to the next.
// Close it when the session ends.
type Leg struct {
	c    *Client
	mu   sync.Mutex
	idle *conn // kept from the last transaction
}

// Leg starts a session's use of the backend.
func (c *Client) Leg() *Leg { return &Leg{c: c} }

// Close gives back the connection the Leg kept.
func (l *Leg) Close() {
	l.mu.Lock()
	bc := l.idle
	l.idle = nil
	l.mu.Unlock()
	if bc != nil {
		l.c.put(bc)
	}
}

// takeIdle returns the connection kept from the last transaction, if any.
func (l *Leg) takeIdle() *conn {
	l.mu.Lock()
	defer l.mu.Unlock()
	bc := l.idle
	l.idle = nil
	return bc
}

// keep takes back a connection after a completed DATA, when the backend is
// in a clean state: to the pool, so a session idle between transactions
// holds no backend slot (the pool is last in, first out: this session's
// next transaction most likely gets it back). Without a pool the Leg keeps
// it; the backend may close it meanwhile (its own timeout), so reused lets
// the next MAIL retry once.
func (l *Leg) keep(bc *conn) {
	if l.c.cfg.PoolSize > 0 {
		l.c.put(bc)
		return
	}
	bc.reused = true
	l.mu.Lock()
	old := l.idle
	l.idle = bc
	l.mu.Unlock()
	if old != nil {
		l.c.put(old)
	}
}

// Tx is one mail transaction at the backend. Nothing is sent at Begin: MAIL
// goes with the first Rcpt, in one write when the backend offers
// PIPELINING (RFC 2920). While the client pauses for SpoolAfter between
// commands, or takes longer than that to send its message, the Tx gives its
// connection up and opens the transaction again (replays MAIL and every
// RCPT) when the client goes on: a slow client holds no backend slot.
//
// Rcpt and Data are called one at a time; Abort may be called from another
// goroutine while Data runs.
type Tx struct {
	leg      *Leg
	class    Class
	from     string
	opts     *smtp.MailOptions
	rcpts    []string // accepted by the backend, for a replay
	rcptOpts []*smtp.RcptOptions
	// Room for the usual single recipient without an allocation.
	rcptBuf [1]string
	optBuf  [1]*smtp.RcptOptions

	mu        sync.Mutex
	bc        *conn       // nil: not opened yet, or given up (replay)
	broken    bool        // failed: nothing more can succeed
	inData    bool        // Data is streaming: Abort closes without QUIT
	aborted   bool        // Abort was called
	done      bool        // delivered
	idleTimer *time.Timer // gives bc up while the client pauses
	lastUse   time.Time   // of bc
}

// Begin starts a transaction from the sender with the client's MAIL
// parameters, held by class.
func (l *Leg) Begin(from string, opts *smtp.MailOptions, class Class) *Tx {
	tx := &Tx{leg: l, class: class, from: from, opts: opts}
	tx.rcpts, tx.rcptOpts = tx.rcptBuf[:0], tx.optBuf[:0]
	return tx
}

// Broken reports whether the transaction failed: no Rcpt or Data can
// succeed any more.
func (tx *Tx) Broken() bool {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	return tx.broken
}

// Rcpt adds a recipient. The first one opens the transaction at the
// backend. An *Error says where and why it failed; a Rcpt refused with a
// Reply leaves the transaction usable.
func (tx *Tx) Rcpt(ctx context.Context, to string, opts *smtp.RcptOptions) error {
	tx.mu.Lock()
	defer tx.mu.Unlock()
	if tx.broken || tx.aborted || tx.done {
		return ErrBroken
	}
	defer func() {
		if tx.bc != nil && !tx.broken {
			tx.hold()
		}
	}()
	obs := tx.leg.c.obs
	var err error
	switch {
	case tx.bc == nil && len(tx.rcpts) > 0:
		// Given up while the client paused: open the transaction again
		// with the recipients accepted so far.
		bc, rerr := tx.replay(ctx)
		if rerr != nil {
			tx.broken = true
			return &Error{Stage: StageReplay, Err: rerr}
		}
		tx.bc = bc
		err = bc.c.Rcpt(to, opts)
	case tx.bc == nil:
		var merr *Error
		if merr, err = tx.open(ctx, to, opts); merr != nil {
			return merr
		}
	default:
		err = tx.bc.c.Rcpt(to, opts)
	}
	if err != nil {
		reply := replyOf(err)
		if reply == nil {
			obs.Failure(StageRcpt)
			tx.breakOff()
		} else {
			obs.Reply(StageRcpt, reply.Code)
		}
		return &Error{Stage: StageRcpt, Reply: reply, Err: err}
	}
	tx.rcpts = append(tx.rcpts, to)
	tx.rcptOpts = append(tx.rcptOpts, opts)
	return nil
}

// open takes a connection (the Leg's kept one, one from the pool, or a new
// one) and sends MAIL and the first RCPT, pipelined when the backend offers
// PIPELINING. mailErr is set when there is no backend transaction
// (unreachable, or MAIL failed or was refused); rcptErr is RCPT's outcome
// otherwise. A reused connection that the backend closed meanwhile fails at
// MAIL, before anything is committed: it is replaced by a fresh one once.
// tx.mu is held.
func (tx *Tx) open(ctx context.Context, to string, opts *smtp.RcptOptions) (mailErr *Error, rcptErr error) {
	c := tx.leg.c
	for attempt := 0; ; attempt++ {
		bc := tx.leg.takeIdle()
		if bc == nil {
			cctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
			var err error
			bc, err = c.get(cctx, tx.class)
			cancel()
			if err != nil {
				c.obs.Failure(StageConnect)
				return &Error{Stage: StageConnect, Err: err}, nil
			}
		}
		err, rerr := bc.c.MailRcpt(tx.from, mailOptions(bc, tx.opts), to, opts)
		if err == nil {
			c.obs.Reply(StageMail, 250)
			tx.bc = bc
			return nil, rerr
		}
		bc.abort()
		if reply := replyOf(err); reply != nil {
			c.obs.Reply(StageMail, reply.Code)
			return &Error{Stage: StageMail, Reply: reply, Err: err}, nil
		}
		c.obs.Failure(StageMail)
		if !bc.reused || attempt > 0 {
			return &Error{Stage: StageMail, Err: err}, nil
		}
	}
}

// mailOptions adapts the client's MAIL parameters to bc: a backend that
// does not offer 8BITMIME gets an 8-bit message undeclared (RFC 6152 3
// leaves a relay to convert or send as is; go-smtp's client refuses to
// declare BODY=8BITMIME to such a server), as tlsguard cannot convert it.
func mailOptions(bc *conn, opts *smtp.MailOptions) *smtp.MailOptions {
	if opts == nil || opts.Body != smtp.Body8BitMIME {
		return opts
	}
	if ok, _ := bc.c.Extension("8BITMIME"); ok {
		return opts
	}
	o := *opts
	o.Body = ""
	return &o
}

// replay opens a new backend transaction after the connection was given
// up: MAIL and the first RCPT pipelined, then the other RCPTs, with the
// client's parameters. The client was told 250 for each recipient already,
// so any refusal now fails the whole transaction. A reused connection that
// went stale is replaced once, as in open.
func (tx *Tx) replay(ctx context.Context) (*conn, error) {
	c := tx.leg.c
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
		bc, err := c.get(cctx, tx.class)
		cancel()
		if err != nil {
			c.obs.Failure(StageConnect)
			return nil, err
		}
		var merr, rerr error
		if len(tx.rcpts) == 0 {
			merr = bc.c.Mail(tx.from, tx.opts)
		} else {
			merr, rerr = bc.c.MailRcpt(tx.from, tx.opts, tx.rcpts[0], tx.rcptOpts[0])
		}
		for i := 1; merr == nil && rerr == nil && i < len(tx.rcpts); i++ {
			rerr = bc.c.Rcpt(tx.rcpts[i], tx.rcptOpts[i])
		}
		if merr == nil && rerr == nil {
			return bc, nil
		}
		bc.abort()
		if merr != nil && replyOf(merr) == nil && bc.reused && attempt == 0 {
			continue
		}
		return nil, fmt.Errorf("replaying the transaction: %w", errors.Join(merr, rerr))
	}
}

// hold gives the connection up if the client sends neither another RCPT
// nor DATA within SpoolAfter: a client pausing between commands must not
// hold a backend slot meanwhile. tx.mu is held.
func (tx *Tx) hold() {
	after := tx.leg.c.cfg.SpoolAfter
	tx.lastUse = time.Now()
	if tx.idleTimer != nil {
		tx.idleTimer.Reset(after)
		return
	}
	tx.idleTimer = time.AfterFunc(after, func() {
		tx.mu.Lock()
		bc := tx.bc
		if bc == nil || tx.inData || time.Since(tx.lastUse) < after {
			tx.mu.Unlock()
			return
		}
		tx.bc = nil
		tx.mu.Unlock()
		bc.quit() // the backend drops the open transaction
	})
}

// breakOff drops the connection after a failure mid-transaction; tx.mu is
// held.
func (tx *Tx) breakOff() {
	if tx.bc != nil {
		tx.bc.abort()
		tx.bc = nil
	}
	tx.broken = true
}

func (tx *Tx) fail() {
	tx.mu.Lock()
	tx.breakOff()
	tx.mu.Unlock()
}

// Abort ends the transaction without delivery: before DATA the connection
// is closed with QUIT (no RSET is trusted on a legacy server); during Data
// it is dropped without the final dot, so the backend discards the message.
// It is safe to call at any time, more than once.
func (tx *Tx) Abort() {
	tx.mu.Lock()
	tx.aborted = true
	if tx.idleTimer != nil {
		tx.idleTimer.Stop()
	}
	bc, inData := tx.bc, tx.inData
	tx.bc = nil
	tx.mu.Unlock()
	switch {
	case bc == nil:
	case inData:
		bc.abort()
	default:
		bc.quit()
	}
}

// Result is the outcome of Data.
type Result struct {
	// Reply is the backend's 250 to the final dot, on one line, as an
	// *smtp.SMTPError (go-smtp's way of sending a custom success text).
	Reply *smtp.SMTPError
	// Bytes were read from the client's reader.
	Bytes int64
	// Spooled: the connection was given up while the client sent the
	// message, and the message sent from the spool on a new one.
	Spooled bool
	// Latency is from the final dot to the backend's reply; 0 when no
	// reply was awaited.
	Latency time.Duration
}

// Data sends header, then the message read from r: line endings made CRLF
// (or the message refused, RejectBareLineEndings), NULs refused, the lines
// dot-stuffed (RFC 5321 4.5.2). The message is kept (in memory, then in an
// unlinked file) until it is complete and then sent in one stream with the
// end-of-data dot, so a client slower than SpoolAfter gives its connection
// up meanwhile. A nil error means the backend said 250.
//
// An *Error is the backend leg's failure; any other error is about the
// message itself: r's own error, or ErrNUL or ErrBareLineEnding. Either
// way the transaction is over.
func (tx *Tx) Data(ctx context.Context, header string, r io.Reader) (Result, error) {
	var res Result
	c := tx.leg.c
	tx.mu.Lock()
	if tx.broken || tx.aborted || tx.done || (tx.bc == nil && len(tx.rcpts) == 0) {
		tx.mu.Unlock()
		return res, ErrBroken
	}
	if tx.idleTimer != nil {
		tx.idleTimer.Stop()
	}
	tx.inData = true
	bc := tx.bc // nil: given up while the client paused; sent from the spool
	tx.mu.Unlock()

	var w *smtp.RawDataCommand
	var err error
	if bc != nil {
		if w, err = bc.c.RawData(); err != nil {
			tx.fail()
			return res, &Error{Stage: StageData, Reply: replyOf(err), Err: err}
		}
	}
	bufs := dataBufPool.Get().(*dataBufs)
	sp := newSpool(c.cfg.SpoolDir)
	bufs.bw.Reset(sp)
	defer func() {
		bufs.bw.Reset(nil)
		bufs.st, bufs.nw = stuffer{}, normalizer{}
		dataBufPool.Put(bufs)
		sp.Close()
	}()
	// A client that has not sent its whole message within SpoolAfter gives
	// its connection up: dropped without the final dot (the backend
	// discards the transaction), its slot free for others.
	finished, released := false, bc == nil
	if bc != nil {
		timer := time.AfterFunc(c.cfg.SpoolAfter, func() {
			tx.mu.Lock()
			if finished || tx.bc != bc {
				tx.mu.Unlock()
				return
			}
			released, tx.bc = true, nil
			tx.mu.Unlock()
			bc.abort()
		})
		defer timer.Stop()
	}
	bufs.st = stuffer{w: bufs.bw}
	bufs.nw = normalizer{w: &bufs.st, reject: c.cfg.RejectBareLineEndings}
	st, nw := &bufs.st, &bufs.nw
	_, err = io.WriteString(st, header)
	if err == nil {
		res.Bytes, err = io.CopyBuffer(nw, r, bufs.copy)
		if err == nil {
			err = nw.flush()
		}
	}
	if err == nil {
		if err = st.end(); err == nil {
			err = bufs.bw.Flush()
		}
	}
	tx.mu.Lock()
	finished = true
	rel, aborted := released, tx.aborted
	tx.mu.Unlock()
	if err != nil {
		// Dropped without the final dot: the backend discards the message.
		tx.fail()
		if sp.err != nil {
			return res, &Error{Stage: StageData, Err: sp.err}
		}
		return res, err
	}
	if rel {
		res.Spooled = true
		if aborted {
			tx.fail()
			return res, &Error{Stage: StageData, Err: errAborted}
		}
		tx.mu.Lock()
		bc, err = tx.replay(ctx)
		if err != nil {
			tx.broken = true
			tx.mu.Unlock()
			return res, &Error{Stage: StageReplay, Err: err}
		}
		tx.bc = bc
		tx.mu.Unlock()
		if w, err = bc.c.RawData(); err != nil {
			tx.fail()
			return res, &Error{Stage: StageReplay, Err: err}
		}
	}
	if _, err := sp.WriteTo(w); err != nil {
		tx.fail()
		return res, &Error{Stage: StageData, Err: err}
	}
	sent := time.Now()
	// RFC 5321 4.5.3.2.6: the server may take 10 minutes to answer the dot
	// (it scans or queues the message meanwhile). The client waits as long:
	// nothing is read from or written to it until this reply is there.
	restore := bc.awaitFinal(c.cfg.DataDoneTimeout)
	resp, err := w.Response()
	restore()
	res.Latency = time.Since(sent)
	if err != nil {
		reply := replyOf(err)
		if reply == nil {
			c.obs.Failure(StageData)
		} else {
			c.obs.Reply(StageData, reply.Code)
		}
		tx.fail()
		return res, &Error{Stage: StageData, Reply: reply, Err: err}
	}
	c.obs.Reply(StageData, 250)
	res.Reply = okReply(resp.StatusText)
	tx.mu.Lock()
	bc, tx.bc = tx.bc, nil
	aborted = tx.aborted
	tx.done = true
	tx.mu.Unlock()
	if bc != nil && !aborted {
		tx.leg.keep(bc)
	}
	return res, nil
}
