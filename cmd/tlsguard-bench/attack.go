package main

// The attack scenarios (-attack spray | drip): one good client is measured
// while attackers, each from a loopback source address of its own, try to
// starve it. The good client (-addr, -mode, -auth, from -src) opens a session
// per message, logs in and sends one message; it runs alone for -baseline,
// then the attackers start (-attackers of them, at -attack-addr, from the
// -attack-src addresses), and after -ramp it is measured for -duration.
//
//	spray  each attacker logs in with wrong passwords, one user name after
//	       another (-spray-users names, and with -spray-good N the good
//	       client's own user every Nth try), as many times as a session
//	       allows; a session that is hung up on (421) burns its source
//	       address and the attacker reconnects from the next unburned one
//	drip   each attacker is an unauthenticated session that sends MAIL,
//	       RCPT to -rcpt-domain, DATA, then -drip-bytes every -drip-every
//	       and never the final dot, holding whatever the server holds for
//	       an open transaction; refused, it reconnects after a second
//
// The good client's figures: login latency (connect until 235), message
// latency (connect until the 250 after the final dot), messages delivered
// per second, and failed attempts by stage and reply (an attempt still
// running -grace after the end is cut off and counted as failed). The
// attackers': AUTH commands answered per second, by reply code (spray), or
// sessions holding DATA and the refusals of the others (drip). Every
// figure but the totals (att_sent_all) covers the measured phase only.
// Failures of the good client are what is measured, not errors of the run:
// the exit status is 0 once the run is complete.

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tlsguard/tlsguard/internal/smtpwire"
)

// maxSources bounds a -src / -attack-src list (a /16 of loopback).
const maxSources = 1 << 16

// pauseAfterFailure is how long the good client waits after a failed
// attempt, and an attacker after a refused connection, so that an instant
// refusal does not become a busy loop that measures the client's own CPU.
const pauseAfterFailure = 200 * time.Millisecond

// parseSources reads "A", "A-B" (an IPv4 range) or a comma-separated list
// of those; every address must be loopback, as the targets must.
func parseSources(s string) ([]net.IP, error) {
	var out []net.IP
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a := net.ParseIP(lo).To4()
		if !isRange {
			ip := net.ParseIP(part)
			if ip == nil {
				return nil, fmt.Errorf("source %q: not an IP address", part)
			}
			if a != nil {
				ip = a
			}
			out = append(out, ip)
		} else {
			b := net.ParseIP(hi).To4()
			if a == nil || b == nil {
				return nil, fmt.Errorf("source range %q: want IPv4 FIRST-LAST", part)
			}
			x, y := ipv4Int(a), ipv4Int(b)
			if y < x || y-x >= maxSources {
				return nil, fmt.Errorf("source range %q: empty or more than %d addresses", part, maxSources)
			}
			for v := x; v <= y; v++ {
				out = append(out, net.IPv4(byte(v>>24), byte(v>>16), byte(v>>8), byte(v)).To4())
			}
		}
		if len(out) > maxSources {
			return nil, fmt.Errorf("more than %d source addresses", maxSources)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("no source address")
	}
	for _, ip := range out {
		if !ip.IsLoopback() {
			return nil, fmt.Errorf("refusing source address %s: only loopback (127.0.0.0/8, ::1) may be used", ip)
		}
	}
	return out, nil
}

func ipv4Int(ip net.IP) uint32 {
	return uint32(ip[0])<<24 | uint32(ip[1])<<16 | uint32(ip[2])<<8 | uint32(ip[3])
}

// phaseStats are the good client's figures for one phase (baseline or
// under attack).
type phaseStats struct {
	mu       sync.Mutex
	login    []time.Duration // connect until 235 (until ready for MAIL without -auth)
	msg      []time.Duration // connect until the 250 after the final dot
	ok, fail atomic.Int64
	errs     errCounts
	wall     time.Duration // start of the phase until its last attempt ended
}

// runGood runs the good client's -c workers for d. An attempt started
// before the end may finish up to -grace after it; the phase's wall time
// includes that, so a stalled delivery lowers the rate. One still running
// then is cut off and counted as failed ("unfinished").
func runGood(ctx context.Context, c *client, msg []byte, d time.Duration) *phaseStats {
	st := &phaseStats{}
	start := time.Now()
	end := start.Add(d)
	gctx, cancel := context.WithDeadline(ctx, end.Add(c.o.grace))
	defer cancel()
	var wg sync.WaitGroup
	for range c.o.conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for gctx.Err() == nil && time.Now().Before(end) {
				if err := goodAttempt(gctx, c, msg, st); err != nil {
					st.fail.Add(1)
					if gctx.Err() != nil && ctx.Err() == nil {
						stage := "connect"
						var se *stageError
						if errors.As(err, &se) {
							stage = se.stage
						}
						err = fmt.Errorf("unfinished %v after the end (cut off at: %s)", c.o.grace, stage)
					}
					st.errs.add(err)
					sleepCtx(gctx, pauseAfterFailure)
				}
			}
		}()
	}
	wg.Wait()
	st.wall = time.Since(start)
	return st
}

// goodAttempt is one session of the good client: connect, log in, one
// message, QUIT. A login that succeeded counts in the login latencies even
// if the delivery then fails.
func goodAttempt(ctx context.Context, c *client, msg []byte, st *phaseStats) error {
	t0 := time.Now()
	s, err := c.open(ctx)
	if err != nil {
		return err
	}
	login := time.Since(t0)
	st.mu.Lock()
	st.login = append(st.login, login)
	st.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { s.conn.Close() })
	defer stop()
	if err := s.deliver(msg); err != nil {
		s.conn.Close()
		return err
	}
	st.mu.Lock()
	st.msg = append(st.msg, time.Since(t0))
	st.mu.Unlock()
	st.ok.Add(1)
	s.quit()
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// attackStats counts what the attackers did and were told.
type attackStats struct {
	conns    atomic.Int64 // sessions opened (ready for AUTH or MAIL)
	connErrs atomic.Int64 // connect, TLS or greeting failures
	sent     atomic.Int64 // AUTH commands sent (spray)
	codes    sync.Map     // reply code (int) -> *atomic.Int64
	inData   atomic.Int64 // drip sessions inside DATA now
	dataOK   atomic.Int64 // drip sessions that got 354
	dripped  atomic.Int64 // drip bytes written
	errs     errCounts
}

func (a *attackStats) reply(code int) {
	v, _ := a.codes.LoadOrStore(code, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func (a *attackStats) code(code int) int64 {
	if v, ok := a.codes.Load(code); ok {
		return v.(*atomic.Int64).Load()
	}
	return 0
}

// snapshot is the attackers' counters at one moment.
type snapshot struct {
	sent, r235, r535, r421, r454, rOther, conns, connErrs, dataOK, dripped int64
}

func (a *attackStats) snap() snapshot {
	s := snapshot{sent: a.sent.Load(), conns: a.conns.Load(), connErrs: a.connErrs.Load(),
		dataOK: a.dataOK.Load(), dripped: a.dripped.Load()}
	a.codes.Range(func(k, v any) bool {
		n := v.(*atomic.Int64).Load()
		switch k.(int) {
		case 235:
			s.r235 += n
		case 535:
			s.r535 += n
		case 421:
			s.r421 += n
		case 454:
			s.r454 += n
		default:
			s.rOther += n
		}
		return true
	})
	return s
}

func (s snapshot) minus(o snapshot) snapshot {
	return snapshot{s.sent - o.sent, s.r235 - o.r235, s.r535 - o.r535, s.r421 - o.r421, s.r454 - o.r454,
		s.rOther - o.rOther, s.conns - o.conns, s.connErrs - o.connErrs, s.dataOK - o.dataOK, s.dripped - o.dripped}
}

// attackers drive the -attackers goroutines.
type attackers struct {
	c      *client // the attackers' mode and target; no -auth
	srcs   []net.IP
	burned []atomic.Bool
	burnN  atomic.Int64
	next   atomic.Uint64
	users  atomic.Uint64
	st     attackStats
}

// nextSrc picks the next source address not yet hung up on; when every one
// is burned it returns one anyway, with true so the caller slows down.
func (a *attackers) nextSrc() (net.IP, bool) {
	for range len(a.srcs) {
		i := int(a.next.Add(1) % uint64(len(a.srcs)))
		if !a.burned[i].Load() {
			return a.srcs[i], false
		}
	}
	return a.srcs[int(a.next.Add(1)%uint64(len(a.srcs)))], true
}

func (a *attackers) burn(ip net.IP) {
	for i, s := range a.srcs {
		if s.Equal(ip) && !a.burned[i].Swap(true) {
			a.burnN.Add(1)
		}
	}
}

// nextUser is the next user name to guess for.
func (a *attackers) nextUser(good string) string {
	n := a.users.Add(1)
	if good != "" && n%uint64(a.c.o.sprayGood) == 0 {
		return good
	}
	return "spray" + strconv.FormatUint(n%uint64(a.c.o.sprayUsers)+1, 10)
}

// spray is one password-spraying attacker.
func (a *attackers) spray(ctx context.Context, good string) {
	for ctx.Err() == nil {
		src, allBurned := a.nextSrc()
		if allBurned {
			sleepCtx(ctx, pauseAfterFailure)
		}
		s, err := a.c.openFrom(ctx, src)
		if err != nil {
			if ctx.Err() == nil {
				a.st.connErrs.Add(1)
				a.st.errs.add(err)
			}
			sleepCtx(ctx, pauseAfterFailure)
			continue
		}
		a.st.conns.Add(1)
		stop := context.AfterFunc(ctx, func() { s.conn.Close() })
		for ctx.Err() == nil {
			user := a.nextUser(good)
			line := "AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00wrong-"+strconv.FormatUint(a.users.Load(), 36)))
			a.st.sent.Add(1)
			code, _, err := s.send(535, line)
			if code == 0 {
				if ctx.Err() == nil {
					a.st.errs.add(fail("auth", err))
				}
				break
			}
			a.st.reply(code)
			if code != 535 {
				if code == 421 {
					a.burn(src)
				}
				break
			}
		}
		stop()
		s.conn.Close()
	}
}

// drip is one unauthenticated session holding an open DATA, from srcs[i].
func (a *attackers) drip(ctx context.Context, i int) {
	src := a.srcs[i%len(a.srcs)]
	o := a.c.o
	chunk := strings.Repeat("x", o.dripBytes)
	for ctx.Err() == nil {
		s, err := a.c.openFrom(ctx, src)
		if err != nil {
			if ctx.Err() == nil {
				a.st.connErrs.Add(1)
				a.st.errs.add(err)
			}
			sleepCtx(ctx, time.Second)
			continue
		}
		a.st.conns.Add(1)
		stop := context.AfterFunc(ctx, func() { s.conn.Close() })
		err = a.openData(s)
		if err == nil {
			a.st.dataOK.Add(1)
			a.st.inData.Add(1)
			err = a.dripBody(ctx, s, chunk)
			a.st.inData.Add(-1)
		}
		if err != nil && ctx.Err() == nil {
			a.st.errs.add(err)
			var re *smtpwire.ReplyError
			if errors.As(err, &re) {
				a.st.reply(re.Code)
			}
		}
		stop()
		s.conn.Close()
		sleepCtx(ctx, time.Second)
	}
}

// openData sends MAIL, RCPT and DATA for a message to a local mailbox.
func (a *attackers) openData(s *session) error {
	o := a.c.o
	if err := s.cmd(250, "MAIL FROM:<drip@attacker.test>"); err != nil {
		return fail("mail", err)
	}
	if err := s.cmd(250, "RCPT TO:<r1@"+o.rcptDomain+">"); err != nil {
		return fail("rcpt", err)
	}
	if err := s.cmd(354, "DATA"); err != nil {
		return fail("data", err)
	}
	return nil
}

// dripBody writes a header and then -drip-bytes every -drip-every, in
// lines of at most 78 characters, until ctx ends or a write fails. It never
// sends the final dot.
func (a *attackers) dripBody(ctx context.Context, s *session, chunk string) error {
	o := a.c.o
	if err := a.write(s, "Subject: drip\r\nX-Drip: "); err != nil {
		return err
	}
	col := len("X-Drip: ")
	t := time.NewTicker(o.dripEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		out := chunk
		if col+len(out) > 76 {
			out += "\r\nX-Drip: "
			col = len("X-Drip: ")
		} else {
			col += len(out)
		}
		if err := a.write(s, out); err != nil {
			return err
		}
		a.st.dripped.Add(int64(len(chunk)))
	}
}

func (a *attackers) write(s *session, p string) error {
	s.conn.SetDeadline(time.Now().Add(a.c.o.timeout))
	if _, err := io.WriteString(s.conn, p); err != nil {
		return fail("data write", err)
	}
	return nil
}

// runAttack runs the baseline, the ramp and the measured phase.
func runAttack(ctx context.Context, c *client, stdout io.Writer) int {
	o := c.o
	msg := buildMessage(o)
	atkTarget, err := loopbackTarget(o.attackAddr)
	if err != nil {
		fmt.Fprintln(stdout, "tlsguard-bench:", err)
		return 2
	}
	srcs, _ := parseSources(o.attackSrc) // checked in parseFlags
	ao := *o
	ao.mode = o.attackMode
	ao.auth = ""
	a := &attackers{c: &client{o: &ao, target: atkTarget, tls: c.tls}, srcs: srcs, burned: make([]atomic.Bool, len(srcs))}
	good := ""
	if o.sprayGood > 0 {
		good, _, _ = strings.Cut(o.auth, ":")
	}

	var base *phaseStats
	if o.baseline > 0 {
		base = runGood(ctx, c, msg, o.baseline)
	}

	actx, stopAttack := context.WithCancel(ctx)
	defer stopAttack()
	var wg sync.WaitGroup
	for i := range o.attackers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if o.attack == "spray" {
				a.spray(actx, good)
			} else {
				a.drip(actx, i)
			}
		}()
	}
	// The ramp ends early once every attacker is at work: each has sent an
	// AUTH (spray) or holds a DATA (drip).
	rampStart := time.Now()
	rampEnd := rampStart.Add(o.ramp)
	for time.Now().Before(rampEnd) && ctx.Err() == nil {
		if o.attack == "spray" && a.st.sent.Load() >= int64(o.attackers) ||
			o.attack == "drip" && a.st.inData.Load() >= int64(o.attackers) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	inData0 := a.st.inData.Load()
	s0 := a.st.snap()
	t0 := time.Now()
	// Sessions inside DATA, sampled during the measured phase.
	var minIn, maxIn atomic.Int64
	minIn.Store(inData0)
	maxIn.Store(inData0)
	sctx, stopSampler := context.WithCancel(ctx)
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case <-t.C:
			}
			v := a.st.inData.Load()
			minIn.Store(min(minIn.Load(), v))
			maxIn.Store(max(maxIn.Load(), v))
		}
	}()
	under := runGood(ctx, c, msg, o.duration)
	stopSampler()
	<-sampled
	s1 := a.st.snap()
	win := time.Since(t0)
	inData1 := a.st.inData.Load()
	stopAttack()
	wg.Wait()

	d := s1.minus(s0)
	replies := d.r235 + d.r535 + d.r421 + d.r454 + d.rOther
	perS := func(n int64) float64 { return float64(n) / win.Seconds() }
	good1 := phaseFields(under)
	if !o.quiet {
		fmt.Fprintf(stdout, "tlsguard-bench: attack=%s; good client: %s -> %s from %s, c=%d, one message of %d bytes per session; attackers: %d x %s -> %s from %d addresses\n",
			o.attack, o.mode, c.target, o.src, o.conc, len(msg), o.attackers, ao.mode, atkTarget, len(srcs))
		if base != nil {
			fmt.Fprintf(stdout, "  baseline (alone, %.1f s): %s\n", base.wall.Seconds(), phaseLine(base))
			base.errs.print(stdout)
		}
		fmt.Fprintf(stdout, "  under attack (%.1f s, after a ramp of %.1f s): %s\n", under.wall.Seconds(), t0.Sub(rampStart).Seconds(), phaseLine(under))
		under.errs.print(stdout)
		if o.attack == "spray" {
			fmt.Fprintf(stdout, "  attackers in that time: %d AUTH sent, %d answered (%.1f/s): 535 %d, 421 %d, 454 %d, 235 %d, other %d; %d sessions, %d failed to open; %d of %d addresses hung up on\n",
				d.sent, replies, perS(replies), d.r535, d.r421, d.r454, d.r235, d.rOther, d.conns, d.connErrs, a.burnN.Load(), len(srcs))
		} else {
			fmt.Fprintf(stdout, "  attackers in that time: inside DATA %d at the start, %d at the end (min %d, max %d) of %d; %d new DATA, %d bytes dripped; %d sessions, %d failed to open\n",
				inData0, inData1, minIn.Load(), maxIn.Load(), o.attackers, d.dataOK, d.dripped, d.conns, d.connErrs)
		}
		a.st.errs.print(stdout)
	}
	line := fmt.Sprintf("RESULT attack=%s attackers=%d dur_s=%.3f %s", o.attack, o.attackers, win.Seconds(), good1)
	if base != nil {
		line += " " + prefixFields("base_", phaseFields(base))
	}
	line += fmt.Sprintf(" att_sent_all=%d att_sent=%d att_replies=%d att_rate=%.1f att_535=%d att_421=%d att_454=%d att_235=%d att_other=%d att_conns=%d att_conn_err=%d att_burned=%d drip_in_data=%d drip_in_data_end=%d drip_in_data_min=%d drip_new_data=%d",
		a.st.sent.Load(), d.sent, replies, perS(replies), d.r535, d.r421, d.r454, d.r235, d.rOther, d.conns, d.connErrs, a.burnN.Load(),
		inData0, inData1, minIn.Load(), d.dataOK)
	fmt.Fprintln(stdout, line)
	return 0
}

// phaseFields is the good client's part of the RESULT line; a latency
// with no sample is "-".
func phaseFields(p *phaseStats) string {
	pl, pm := msOrDash(p.login), msOrDash(p.msg)
	rate := 0.0
	if p.wall > 0 {
		rate = float64(p.ok.Load()) / p.wall.Seconds()
	}
	return fmt.Sprintf("ok=%d fail=%d logins=%d wall_s=%.3f rate=%.2f login_p50_ms=%s login_p90_ms=%s login_max_ms=%s msg_p50_ms=%s msg_p90_ms=%s msg_max_ms=%s",
		p.ok.Load(), p.fail.Load(), len(p.login), p.wall.Seconds(), rate, pl(0.5), pl(0.9), pl(1), pm(0.5), pm(0.9), pm(1))
}

// msOrDash is percentiles formatted with one decimal, "-" without samples.
func msOrDash(d []time.Duration) func(p float64) string {
	pc := percentiles(d)
	return func(p float64) string {
		if len(d) == 0 {
			return "-"
		}
		return strconv.FormatFloat(pc(p), 'f', 1, 64)
	}
}

func prefixFields(prefix, fields string) string {
	f := strings.Fields(fields)
	for i := range f {
		f[i] = prefix + f[i]
	}
	return strings.Join(f, " ")
}

// phaseLine is phaseFields for people.
func phaseLine(p *phaseStats) string {
	pl, pm := msOrDash(p.login), msOrDash(p.msg)
	return fmt.Sprintf("%d delivered, %d failed, %.2f msgs/s; %d logins, ms p50 %s p90 %s max %s; message ms p50 %s p90 %s max %s",
		p.ok.Load(), p.fail.Load(), float64(p.ok.Load())/p.wall.Seconds(), len(p.login), pl(0.5), pl(0.9), pl(1), pm(0.5), pm(0.9), pm(1))
}

// checkAttackFlags validates -src and the -attack flags and fills the
// defaults that depend on the scenario.
func checkAttackFlags(o *options, fs *flag.FlagSet) error {
	if o.src != "" {
		srcs, err := parseSources(o.src)
		if err != nil {
			return fmt.Errorf("-src: %v", err)
		}
		if len(srcs) != 1 {
			return errors.New("-src: want one address")
		}
	}
	if o.attack == "" {
		return nil
	}
	switch o.attack {
	case "spray":
		if o.attackMode == "" {
			o.attackMode = "implicit" // AUTH is offered only after TLS
		}
	case "drip":
		if o.attackMode == "" {
			o.attackMode = "plain"
		}
	default:
		return fmt.Errorf("-attack %q: want spray or drip", o.attack)
	}
	switch o.attackMode {
	case "plain", "starttls", "implicit":
	default:
		return fmt.Errorf("-attack-mode %q: want plain, starttls or implicit", o.attackMode)
	}
	if o.hold > 0 {
		return errors.New("-attack and -hold do not go together")
	}
	if o.auth == "" {
		return errors.New("-attack: the good client logs in: give -auth user:pass")
	}
	if o.attackAddr == "" {
		return errors.New("-attack: give -attack-addr")
	}
	if _, err := parseSources(o.attackSrc); err != nil {
		return fmt.Errorf("-attack-src: %v", err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["c"] {
		o.conc = 1 // one good client, not the load default
	}
	for _, c := range []struct {
		name      string
		v, lo, hi int
	}{
		{"-attackers", o.attackers, 1, maxConc},
		{"-spray-users", o.sprayUsers, 1, maxMessages},
		{"-drip-bytes", o.dripBytes, 1, 1000},
		{"-spray-good", o.sprayGood, 0, maxMessages},
	} {
		if c.v < c.lo || c.v > c.hi {
			return fmt.Errorf("%s %d: must be between %d and %d", c.name, c.v, c.lo, c.hi)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
		lo   time.Duration
	}{
		{"-duration", o.duration, time.Millisecond},
		{"-baseline", o.baseline, 0},
		{"-ramp", o.ramp, 0},
		{"-grace", o.grace, 0},
		{"-drip-every", o.dripEvery, time.Millisecond},
	} {
		if d.v < d.lo || d.v > maxHoldFor {
			return fmt.Errorf("%s %v: must be between %v and %v", d.name, d.v, d.lo, maxHoldFor)
		}
	}
	return nil
}
