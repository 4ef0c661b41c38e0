// Command floor is the benchmark's lower bound for an SMTP proxy written in
// Go with crypto/tls: the least work any such proxy must do for the bench's
// load, and nothing else. It is an experiment, not part of the
// product, and it is not safe to run in front of anything real.
//
// Per session it answers the greeting, EHLO, STARTTLS (a TLS handshake with
// the same crypto/tls settings as tlsguard), EHLO again, MAIL, RCPT, DATA
// and QUIT with one write per reply, as any lock-step SMTP server must. With
// -backend it forwards each message to the backend over pooled plaintext
// connections the cheapest way SMTP allows (MAIL and RCPT in one write,
// DATA, then the client's already dot-stuffed lines and the final dot in one
// write), so the backend's count can be checked. It does not parse addresses,
// check policy, normalise line ends, log, time anything out or bound
// anything: everything tlsguard does beyond this is tlsguard's own cost.
//
//	go build -o /tmp/floor ./bench/floor
//	floor -cert c.pem -key k.pem -starttls 127.0.0.1:31587 -implicit 127.0.0.1:31465 -backend 127.0.0.1:31025
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
)

func main() {
	var (
		cert     = flag.String("cert", "", "PEM certificate")
		key      = flag.String("key", "", "PEM key")
		starttls = flag.String("starttls", "127.0.0.1:31587", "STARTTLS listener (loopback)")
		implicit = flag.String("implicit", "127.0.0.1:31465", "implicit-TLS listener (loopback)")
		backend  = flag.String("backend", "", "plaintext SMTP backend; empty: accept and discard")
		cpuprof  = flag.String("cpuprofile", "", "write a pprof CPU profile here from start until SIGINT/SIGTERM")
	)
	flag.Parse()
	if *cpuprof != "" {
		profile(*cpuprof)
	}
	pair, err := tls.LoadX509KeyPair(*cert, *key)
	if err != nil {
		log.Fatalf("floor: %v", err)
	}
	// tlsguard's settings (certs/tlsconfig.go): TLS 1.2 and up, session
	// tickets on, Go's default curves and TLS 1.3 suites.
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}}
	f := &floor{tls: cfg, backend: *backend}
	errc := make(chan error, 2)
	for _, l := range []struct {
		addr     string
		implicit bool
	}{{*starttls, false}, {*implicit, true}} {
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			log.Fatalf("floor: %v", err)
		}
		if !ln.Addr().(*net.TCPAddr).IP.IsLoopback() {
			log.Fatalf("floor: %s is not a loopback address", l.addr)
		}
		go func(ln net.Listener, implicit bool) { errc <- f.serve(ln, implicit) }(ln, l.implicit)
	}
	log.Fatalf("floor: %v", <-errc)
}

// profile starts a CPU profile into path and stops it, then exits, on
// SIGINT or SIGTERM.
func profile(path string) {
	f, err := os.Create(path)
	if err != nil {
		log.Fatalf("floor: %v", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		log.Fatalf("floor: %v", err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		pprof.StopCPUProfile()
		f.Close()
		os.Exit(0)
	}()
}

type floor struct {
	tls     *tls.Config
	backend string

	mu   sync.Mutex
	pool []*backendConn
}

func (f *floor) serve(ln net.Listener, implicit bool) error {
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			if implicit {
				c = tls.Server(c, f.tls)
			}
			if err := f.session(c, implicit); err != nil && !errors.Is(err, io.EOF) {
				log.Printf("floor: session: %v", err)
			}
		}()
	}
}

// session runs one SMTP session on c: one write per reply.
func (f *floor) session(c net.Conn, secure bool) error {
	r := bufio.NewReaderSize(c, 1024)
	reply := func(s string) error { _, err := io.WriteString(c, s); return err }
	if err := reply("220 floor ESMTP\r\n"); err != nil {
		return err
	}
	var mail []byte
	var bc *backendConn
	defer func() {
		if bc != nil {
			bc.c.Close()
		}
	}()
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			return err
		}
		verb := strings.ToUpper(string(line[:min(4, len(line))]))
		switch {
		case verb == "EHLO":
			ext := "250-floor\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 STARTTLS\r\n"
			if secure {
				ext = "250-floor\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
			}
			err = reply(ext)
		case verb == "STAR" && !secure:
			if err = reply("220 2.0.0 Ready to start TLS\r\n"); err != nil {
				return err
			}
			tc := tls.Server(c, f.tls)
			if err = tc.Handshake(); err != nil {
				return err
			}
			c, secure = tc, true
			r.Reset(c)
		case verb == "MAIL":
			mail = append(mail[:0], line...)
			err = reply("250 2.1.0 Ok\r\n")
		case verb == "RCPT":
			if f.backend != "" && bc == nil {
				if bc, err = f.get(); err != nil {
					return err
				}
				if err = bc.send(mail, line); err != nil {
					return err
				}
				if err = bc.expect('2', 2); err != nil {
					return err
				}
			}
			err = reply("250 2.1.5 Ok\r\n")
		case verb == "DATA":
			if err = f.data(c, r, bc); err != nil {
				return err
			}
			if bc != nil {
				f.put(bc)
				bc = nil
			}
		case verb == "QUIT":
			return reply("221 2.0.0 Bye\r\n")
		default: // RSET, NOOP
			err = reply("250 2.0.0 Ok\r\n")
		}
		if err != nil {
			return err
		}
	}
}

// data answers DATA and copies the message's lines, still dot-stuffed, to
// bc (if any) up to and including the final dot, in one write.
func (f *floor) data(c net.Conn, r *bufio.Reader, bc *backendConn) error {
	if bc != nil {
		if err := bc.send([]byte("DATA\r\n")); err != nil {
			return err
		}
		if err := bc.expect('3', 1); err != nil {
			return err
		}
	}
	if _, err := io.WriteString(c, "354 End data with <CR><LF>.<CR><LF>\r\n"); err != nil {
		return err
	}
	for {
		line, err := r.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
		if bc != nil {
			bc.w.Write(line)
		}
		if bytes.Equal(line, []byte(".\r\n")) {
			break
		}
	}
	if bc != nil {
		if err := bc.w.Flush(); err != nil {
			return err
		}
		if err := bc.expect('2', 1); err != nil {
			return err
		}
	}
	_, err := io.WriteString(c, "250 2.0.0 Ok: queued\r\n")
	return err
}

// backendConn is one pooled plaintext connection to the backend.
type backendConn struct {
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

func (f *floor) get() (*backendConn, error) {
	f.mu.Lock()
	if n := len(f.pool); n > 0 {
		bc := f.pool[n-1]
		f.pool = f.pool[:n-1]
		f.mu.Unlock()
		return bc, nil
	}
	f.mu.Unlock()
	c, err := net.Dial("tcp", f.backend)
	if err != nil {
		return nil, fmt.Errorf("dial backend: %w", err)
	}
	bc := &backendConn{c: c, r: bufio.NewReaderSize(c, 1024), w: bufio.NewWriterSize(c, 16<<10)}
	if err := bc.expect('2', 1); err != nil {
		return nil, err
	}
	if err := bc.send([]byte("EHLO floor\r\n")); err != nil {
		return nil, err
	}
	return bc, bc.expect('2', 1)
}

func (f *floor) put(bc *backendConn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.pool) < 256 { // tlsguard's backend.pool_size default
		f.pool = append(f.pool, bc)
		return
	}
	bc.c.Close()
}

// send writes lines in one write.
func (bc *backendConn) send(lines ...[]byte) error {
	for _, l := range lines {
		bc.w.Write(l)
	}
	return bc.w.Flush()
}

// expect reads n replies (multi-line ones whole) and wants each to start with
// class.
func (bc *backendConn) expect(class byte, n int) error {
	for n > 0 {
		line, err := bc.r.ReadSlice('\n')
		if err != nil {
			return fmt.Errorf("backend: %w", err)
		}
		if len(line) < 4 || line[0] != class {
			return fmt.Errorf("backend: unexpected reply %q", line)
		}
		if line[3] == ' ' {
			n--
		}
	}
	return nil
}
