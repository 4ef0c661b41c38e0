// Command pprof is the profiling harness of the benchmark (bench/profile.sh
// runs it): tlsguard's proxy wired as `tlsguard serve` wires it (certs,
// policy, logging, proxy; the bench's listeners and limits), plus pprof CPU
// and allocation profiles written to files. It is not part of the product
// and adds no endpoint to it: the product has no pprof hook (see
// docs/performance.md).
//
//	go build -o /tmp/tlsguard-pprof ./bench/pprof
//	tlsguard-pprof -cert c.pem -key k.pem -backend 127.0.0.1:31025 -out DIR
//
// It profiles CPU from start until SIGINT/SIGTERM, then writes DIR/cpu.pprof,
// DIR/allocs.pprof (allocations since start) and DIR/heap.pprof. SIGUSR1
// writes DIR/heap-N.pprof, DIR/goroutine-N.txt and a runtime.MemStats summary
// at that moment (used while sessions are held idle). Loopback listeners only.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/tlsguard/tlsguard/certs"
	"github.com/tlsguard/tlsguard/internal/config"
	"github.com/tlsguard/tlsguard/logging"
	"github.com/tlsguard/tlsguard/policy"
	"github.com/tlsguard/tlsguard/proxy"
)

func main() {
	var (
		cert     = flag.String("cert", "", "PEM certificate")
		key      = flag.String("key", "", "PEM key")
		backend  = flag.String("backend", "127.0.0.1:31025", "smtp-sink address")
		starttls = flag.String("starttls", "127.0.0.1:31587", "STARTTLS listener (loopback)")
		implicit = flag.String("implicit", "127.0.0.1:31465", "implicit TLS listener (loopback)")
		polFile  = flag.String("policy", "", "policy file")
		level    = flag.String("log-level", "info", "log level (the log goes to stderr, as tlsguard's does)")
		out      = flag.String("out", ".", "folder for the profiles")
		rate     = flag.Int("memprofilerate", 0, "runtime.MemProfileRate (0: Go's default, one sample per 512 KB)")
	)
	flag.Parse()
	if err := run(*cert, *key, *backend, *starttls, *implicit, *polFile, *level, *out, *rate); err != nil {
		fmt.Fprintln(os.Stderr, "tlsguard-pprof:", err)
		os.Exit(1)
	}
}

func run(cert, key, backend, starttls, implicit, polFile, level, out string, rate int) error {
	for _, a := range []string{starttls, implicit, backend} {
		host, _, err := net.SplitHostPort(a)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			return fmt.Errorf("%s: loopback addresses only", a)
		}
	}
	if rate > 0 {
		runtime.MemProfileRate = rate
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log, err := logging.New(logging.Config{Level: level, Format: "json"})
	if err != nil {
		return err
	}
	pol, err := policy.Load(polFile)
	if err != nil {
		return err
	}
	// The defaults of tlsguard.yaml, with room for the bench's sessions.
	defaults := config.Default()
	defaults.Backend.Address = backend
	defaults.TLS.Certificates = []certs.Pair{{Cert: cert, Key: key}}
	cm, err := certs.New(ctx, defaults.TLS,
		certs.Options{Hostname: "mail.example.test", StateDir: filepath.Join(out, "state"), Logger: log})
	if err != nil {
		return err
	}
	defer cm.Close()
	limits := defaults.ProxyLimits()
	limits.MaxSessions, limits.MaxSessionsPerIP = 20000, 20000
	srv, err := proxy.New(proxy.Config{
		Hostname: "mail.example.test",
		Listeners: []proxy.ListenerConfig{
			{Name: "submission", Address: starttls, TLS: proxy.TLSStartTLS, Auth: true},
			{Name: "submissions", Address: implicit, TLS: proxy.TLSImplicit, Auth: true},
		},
		TLS:     cm.ServerConfig(),
		Backend: defaults.ProxyBackend(),
		Limits:  limits,
		Policy:  pol,
		Logger:  log,
	})
	if err != nil {
		return err
	}
	cpu, err := os.Create(filepath.Join(out, "cpu.pprof"))
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "tlsguard-pprof: serving; SIGUSR1 = heap snapshot, SIGINT = write profiles and stop")
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	for n := 1; ; n++ {
		select {
		case <-usr1:
			snapshot(out, n)
			continue
		case <-ctx.Done():
		}
		break
	}
	pprof.StopCPUProfile()
	cpu.Close()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	for _, p := range []string{"allocs", "heap"} {
		if err := writeProfile(filepath.Join(out, p+".pprof"), p, 0); err != nil {
			return err
		}
	}
	return nil
}

func writeProfile(path, name string, debug int) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.Lookup(name).WriteTo(f, debug)
}

// snapshot records memory while sessions are held: heap profile, goroutine
// stacks (grouped), and where the RSS goes according to the runtime.
func snapshot(out string, n int) {
	runtime.GC()
	writeProfile(filepath.Join(out, fmt.Sprintf("heap-%d.pprof", n)), "heap", 0)
	writeProfile(filepath.Join(out, fmt.Sprintf("goroutine-%d.txt", n)), "goroutine", 1)
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	f, err := os.Create(filepath.Join(out, fmt.Sprintf("memstats-%d.txt", n)))
	if err != nil {
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "goroutines %d\nheap_inuse_kb %d\nheap_alloc_kb %d\nstack_inuse_kb %d\nsys_kb %d\nheap_released_kb %d\nheap_idle_kb %d\nnum_gc %d\n",
		runtime.NumGoroutine(), m.HeapInuse>>10, m.HeapAlloc>>10, m.StackInuse>>10, m.Sys>>10, m.HeapReleased>>10, m.HeapIdle>>10, m.NumGC)
}
