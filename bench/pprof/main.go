// Command pprof is the profiling harness of the benchmark (bench/profile.sh
// runs it): tlsguard's proxy built by internal/app, the wiring `tlsguard
// serve` uses, from a config it writes (the bench's listeners, certificate,
// backend, policy and limits; every other key at its default), plus pprof
// CPU and allocation profiles written to files. It is not part of the product
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

	"github.com/tlsguard/tlsguard/internal/app"
	"github.com/tlsguard/tlsguard/internal/config"
	"github.com/tlsguard/tlsguard/logging"
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
	cfg, err := writeConfig(cert, key, backend, starttls, implicit, polFile, level, out)
	if err != nil {
		return err
	}
	log, lvl, err := logging.NewLevel(cfg.LogConfig())
	if err != nil {
		return err
	}
	log = log.Named("tlsguard")
	cpu, err := os.Create(filepath.Join(out, "cpu.pprof"))
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(cpu); err != nil {
		return err
	}
	srv := app.New(cfg, log, lvl)
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
	srv.Shutdown() // within shutdown_grace, which the config sets to 5s
	for _, p := range []string{"allocs", "heap"} {
		if err := writeProfile(filepath.Join(out, p+".pprof"), p, 0); err != nil {
			return err
		}
	}
	return nil
}

// writeConfig writes the bench's tlsguard.yaml into out and loads it as
// `tlsguard serve` would; every key it does not name keeps its default.
func writeConfig(cert, key, backend, starttls, implicit, polFile, level, out string) (*config.Config, error) {
	abs := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			return p
		}
		return a
	}
	// %q writes a Go string, which YAML reads as a double-quoted scalar.
	body := fmt.Sprintf(`hostname: mail.example.test
state_dir: %q
listeners:
  - {name: submission, address: %q, tls: starttls}
  - {name: submissions, address: %q, tls: implicit}
tls:
  certificates:
    - {cert: %q, key: %q}
backend:
  address: %q
policy: %q
log: {level: %q, format: json}
limits: {max_sessions: 20000, max_sessions_per_ip: 20000}
shutdown_grace: 5s
`, abs(filepath.Join(out, "state")), starttls, implicit, abs(cert), abs(key), backend, abs(polFile), level)
	path := filepath.Join(out, "tlsguard-pprof.yaml")
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		return nil, err
	}
	return app.LoadConfig(path)
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
