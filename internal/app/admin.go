package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/tlsguard/tlsguard/certs"
)

// adminMetrics are the process-level metrics that live outside the proxy.
type adminMetrics struct {
	reloads *prometheus.CounterVec
	// clusterDegraded is set by the fleet's Redis client; it stays 0
	// without cluster:, so an alert on it needs no second form.
	clusterDegraded prometheus.Gauge
}

// newRegistry builds the registry with Go and process collectors, the
// reload counter and, when certs is not nil, certificate expiry per name.
func newRegistry(certs func() *certs.Manager) (*prometheus.Registry, *adminMetrics) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &adminMetrics{reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "tlsguard", Name: "reloads_total",
		Help: "Reloads by what (policy, users, certificates) and result (ok, failed)."}, []string{"what", "result"})}
	m.clusterDegraded = prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "tlsguard", Name: "cluster_degraded",
		Help: "1 while Redis is unreachable and this instance of a fleet keeps its state alone; 0 while it shares, or without cluster."})
	reg.MustRegister(m.reloads, m.clusterDegraded, &expiryCollector{certs: certs})
	// Every pair exists from the start at 0, so an alert on failed reloads
	// sees a series before the first failure.
	for _, what := range []string{"policy", "users", "certificates"} {
		for _, result := range []string{"ok", "failed"} {
			m.reloads.WithLabelValues(what, result)
		}
	}
	return reg, m
}

// expiryCollector reports each certificate's expiry at scrape time.
type expiryCollector struct {
	certs func() *certs.Manager
}

var expiryDesc = prometheus.NewDesc("tlsguard_certificate_expiry_timestamp_seconds",
	"When the certificate served for a name expires (Unix time); alert well before.", []string{"name"}, nil)

func (e *expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- expiryDesc }

func (e *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	m := e.certs()
	if m == nil {
		return
	}
	for name, t := range m.Expiry() {
		ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, float64(t.Unix()), name)
	}
}

// readiness answers /readyz: listeners up, certificates loaded, backend
// reachable within its timeout. The backend probe is cached for a few
// seconds so a busy prober cannot hammer the legacy server.
type readiness struct {
	listening func() bool
	certsOK   func() bool
	backend   string
	timeout   time.Duration
	// degraded, if set, reports a fleet instance acting alone: still
	// ready (its mail path works), with the reason in the body, so that a
	// load balancer does not drain a whole fleet when Redis goes away.
	degraded func() (bool, string)

	mu      sync.Mutex
	checked time.Time
	lastErr error
}

func (r *readiness) check(ctx context.Context) error {
	if !r.listening() {
		return errors.New("listeners not serving")
	}
	if !r.certsOK() {
		return errors.New("no certificate loaded")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if time.Since(r.checked) < 3*time.Second {
		return r.lastErr
	}
	r.checked = time.Now()
	r.lastErr = probeBackend(ctx, r.backend, r.timeout)
	return r.lastErr
}

// state is readiness without a new probe: the listeners and certificates
// now, the backend as the last /readyz probe found it (ready until one
// fails).
func (r *readiness) state() float64 {
	if !r.listening() || !r.certsOK() {
		return 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lastErr != nil {
		return 0
	}
	return 1
}

// probeBackend connects and reads the 220 greeting, then says QUIT.
func probeBackend(ctx context.Context, addr string, timeout time.Duration) error {
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("backend %s: %w", addr, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return fmt.Errorf("backend %s: greeting: %w", addr, err)
	}
	if n < 3 || string(buf[:3]) != "220" {
		return fmt.Errorf("backend %s: greeting is not 220", addr)
	}
	io.WriteString(c, "QUIT\r\n")
	return nil
}

// serveAdmin starts the admin HTTP server; the returned func stops it.
func serveAdmin(addr string, reg *prometheus.Registry, ready *readiness, log *zap.Logger) (func(context.Context) error, error) {
	// tlsguard_ready follows readiness without probing: a scrape must not
	// open connections to the legacy backend.
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "tlsguard", Name: "ready",
		Help: "1 while the listeners serve, a certificate is loaded and the last backend probe of /readyz (if any) succeeded; else 0."},
		ready.state))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready.check(r.Context()); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		if ready.degraded != nil {
			if d, why := ready.degraded(); d {
				io.WriteString(w, "ready, degraded: acting alone, Redis unreachable ("+why+")\n")
				return
			}
		}
		io.WriteString(w, "ready\n")
	})
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	if ta, ok := l.Addr().(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		log.Warn("admin endpoint is not on loopback: it has no authentication; keep it on a private network", zap.Stringer("address", l.Addr()))
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	go srv.Serve(l)
	log.Info("admin listening", zap.Stringer("address", l.Addr()))
	return srv.Shutdown, nil
}
