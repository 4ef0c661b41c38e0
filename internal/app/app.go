// Package app builds a running tlsguard from its config, in one place for
// every program that runs one (`tlsguard serve`, `tlsguard check`, the
// profiling harness bench/pprof): the policy with its open-relay self-test,
// the credential sources, the fleet's Redis, the certificates, the backend
// and mailbox legs with their TLS settings, the proxy and the admin
// endpoint; and it reloads them (SIGHUP, a changed policy file). The
// caller keeps the command line and the signals.
package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tlsguard/tlsguard/certs"
	"github.com/tlsguard/tlsguard/internal/auth"
	"github.com/tlsguard/tlsguard/internal/cluster"
	"github.com/tlsguard/tlsguard/internal/config"
	"github.com/tlsguard/tlsguard/internal/mailbox"
	"github.com/tlsguard/tlsguard/logging"
	"github.com/tlsguard/tlsguard/policy"
	"github.com/tlsguard/tlsguard/proxy"
)

// LoadConfig loads the config file and checks that the files it names can
// be read, reporting both as file:line: key: message.
func LoadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	if errs := cfg.CheckFiles(); len(errs) > 0 {
		return nil, errs
	}
	return cfg, nil
}

// App is what a running tlsguard holds and reloads.
type App struct {
	cfg     *config.Config
	log     *zap.Logger
	level   zap.AtomicLevel // the logger's, set from log.level on reload
	certs   *certs.Manager
	srv     *proxy.Server
	metrics *adminMetrics

	registry    prometheus.Registerer
	authMetrics *auth.Metrics // built once: reloads rebuild the sources, not their metrics
	// checkOnly is `tlsguard check`: load everything, create nothing.
	checkOnly bool

	fleet     *cluster.Client
	stopAdmin func(context.Context) error
	watcher   *policyWatcher
}

// New is an App for cfg, as LoadConfig returns it; level is log's, so
// that a reload can change it. Nothing is built before Start.
func New(cfg *config.Config, log *zap.Logger, level zap.AtomicLevel) *App {
	return &App{cfg: cfg, log: log, level: level}
}

// reloaded counts a reload of what and logs it, or its refusal; fields
// name what was read (the file).
func (a *App) reloaded(what string, err error, fields ...zap.Field) {
	result := "ok"
	if err != nil {
		result = "failed"
		a.log.Error(what+" reload refused; the old one stays in force", append(fields, zap.Error(err))...)
	} else {
		a.log.Info(what+" reloaded", fields...)
	}
	a.metrics.reloads.WithLabelValues(what, result).Inc()
}

// Start builds the server from the config (policy, credential sources,
// fleet, certificates, backend leg, proxy, admin endpoint) and starts
// listening. ctx bounds the certificates' and the fleet's background work:
// cancel it when the process stops. On an error everything built so far
// is closed.
func (a *App) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			a.close(context.Background())
		}
	}()
	cfg, log := a.cfg, a.log
	pol, err := a.loadPolicy()
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	reg, am := newRegistry(func() *certs.Manager { return a.certs })
	a.metrics, a.registry = am, reg
	auth, err := a.authenticator()
	if err != nil {
		return err
	}
	fleet, seal, err := a.openCluster()
	if err != nil {
		return err
	}
	a.fleet = fleet
	var serverTLS *tls.Config
	if cfg.NeedsTLS() {
		opts := certs.Options{Hostname: cfg.Hostname, StateDir: cfg.StateDir, Logger: log}
		if st := a.clusterStorage(fleet, seal); st != nil {
			opts.Storage = st
		}
		a.certs, err = certs.New(ctx, cfg.TLS, opts)
		if err != nil {
			return fmt.Errorf("certificates: %w", err)
		}
		serverTLS = a.certs.ServerConfig()
		if cfg.Cluster.Shares(config.ShareSessionTickets) {
			tickets := fleet.Tickets(seal, a.certs.SetSessionTicketKeys)
			tickets.Sync()
			go tickets.Run(ctx)
		}
	}
	backend, err := a.backendConfig()
	if err != nil {
		return err
	}
	mbox, err := a.mailboxBackend()
	if err != nil {
		return err
	}
	a.srv, err = proxy.New(proxy.Config{
		Mailbox:         mbox,
		Metrics:         proxy.NewMetrics(reg),
		Hostname:        cfg.Hostname,
		Listeners:       cfg.ProxyListeners(),
		TLS:             serverTLS,
		Backend:         backend,
		Limits:          cfg.ProxyLimits(),
		BareLineEndings: proxy.BareLineEndings(cfg.BareLineEndings),
		DSN:             proxy.DSNMode(cfg.DSN),
		Policy:          pol,
		Auth:            auth,
		Logger:          log,
	})
	if err != nil {
		return err
	}
	if fleet != nil {
		if cfg.Cluster.Shares(config.ShareAuthThrottle) {
			a.srv.ShareAuth(fleet.AuthShare())
		}
		if cfg.Cluster.Shares(config.ShareRateLimits) {
			a.srv.RateCounters().Share(fleet.RateStore())
		}
	}
	if auth == nil {
		log.Warn("no auth configured (auth.sources, auth.users_file or auth.backend): AUTH is not offered, only local delivery and trusted networks work")
	}
	startCtx, cancel := context.WithTimeout(ctx, cfg.Backend.Timeout)
	err = a.srv.Start(startCtx)
	cancel()
	if err != nil {
		return err
	}
	if cfg.Admin.Address != "" {
		ready := &readiness{
			listening: a.srv.Serving,
			certsOK:   func() bool { return a.certs == nil || len(a.certs.Expiry()) > 0 },
			backend:   cfg.Backend.Address,
			timeout:   cfg.Backend.Timeout,
		}
		if fleet != nil {
			ready.degraded = fleet.Degraded
		}
		a.stopAdmin, err = serveAdmin(cfg.Admin.Address, reg, ready, log)
		if err != nil {
			a.srv.Shutdown(context.Background())
			return err
		}
	}
	log.Info("tlsguard ready", zap.String("hostname", cfg.Hostname), zap.String("config", cfg.File()), zap.String("policy", cfg.Policy))
	a.watcher = a.policyWatcher() // reload the policy when its file changes
	return nil
}

// PolicyWatchInterval is how often the caller of Start should call
// PollPolicy.
const PolicyWatchInterval = policyWatchInterval

// PollPolicy reloads the policy if its file changed and settled. Call it
// on the goroutine that calls Reload, so the two never race.
func (a *App) PollPolicy() { a.watcher.poll() }

// Reload applies a changed config, policy, credentials and certificates
// (SIGHUP); see reload.
func (a *App) Reload() {
	a.watcher.follow(a.cfg.Policy, a.listenerNames(), a.reload())
}

// Shutdown stops the server, letting sessions finish within
// shutdown_grace, then closes the admin endpoint, the certificates and
// the fleet's connection.
func (a *App) Shutdown() error {
	// The grace as text ("30s"): the encoder writes durations as
	// bare milliseconds, which read as seconds.
	a.log.Info("shutting down", zap.String("grace", a.cfg.ShutdownGrace.String()))
	sctx, cancel := context.WithTimeout(context.Background(), a.cfg.ShutdownGrace)
	defer cancel()
	err := a.srv.Shutdown(sctx)
	a.close(context.Background())
	return err
}

// close releases what Start built, besides the proxy.
func (a *App) close(ctx context.Context) {
	if a.stopAdmin != nil {
		a.stopAdmin(ctx)
	}
	if a.certs != nil {
		a.certs.Close()
	}
	if a.fleet != nil {
		a.fleet.Close()
	}
}

// reload re-reads the config, the policy, the credentials and the
// certificates. Each is replaced only if its new version loads; otherwise the
// old one stays and the error is logged. It reports whether a new policy was
// put in force.
func (a *App) reload() (policyLoaded bool) {
	a.log.Info("reload requested (SIGHUP)")
	cfg, err := LoadConfig(a.cfg.File())
	if err != nil {
		// A bad file changes nothing: not even the parts that are fine.
		a.reloaded("config", err, zap.String("config", a.cfg.File()))
		return false
	}
	if later := cfg.KeepRestartOnly(a.cfg); len(later) > 0 {
		a.log.Warn("config sections changed that apply only at restart; they keep their running values until then", zap.Strings("sections", later))
	}
	var kept []string
	if !reflect.DeepEqual(a.cfg.ProxyListeners(), cfg.ProxyListeners()) {
		err := a.srv.UpdateListeners(cfg.ProxyListeners())
		a.reloaded("listeners", err)
		if err != nil {
			// The listeners serving stay those of the running config.
			cfg.Listeners = a.cfg.Listeners
			kept = append(kept, "listeners")
		}
	}
	if cfg.Log.Level != a.cfg.Log.Level {
		logging.SetLevel(a.level, cfg.LogConfig())
		a.log.Info("log level changed", zap.String("from", a.cfg.Log.Level), zap.String("to", cfg.Log.Level))
	}
	a.cfg = cfg
	if len(kept) > 0 {
		// Not "config reloaded" after a refusal: say what did not apply.
		a.log.Warn("config reloaded in part; the running values stay for what was refused", zap.String("config", cfg.File()), zap.Strings("kept", kept))
		a.metrics.reloads.WithLabelValues("config", "ok").Inc()
	} else {
		a.reloaded("config", nil, zap.String("config", cfg.File()))
	}
	pol, err := a.loadPolicy()
	if err == nil {
		a.srv.SetPolicy(pol)
		policyLoaded = true
	}
	a.reloaded("policy", err, zap.String("policy", a.cfg.Policy))
	auth, err := a.authenticator()
	if err == nil {
		old := a.srv.SetAuthenticator(auth)
		if c, ok := old.(interface{ Close() }); ok {
			c.Close() // its pooled connections to directories and Dovecot
		}
	}
	a.reloaded("users", err)
	if a.certs != nil {
		a.reloaded("certificates", a.certs.Reload())
	}
	return policyLoaded
}

// loadPolicy loads the policy file and refuses one that makes an open relay;
// it warns about trusted networks that NAT makes everyone's.
func (a *App) loadPolicy() (*policy.Policy, error) {
	pol, err := policy.Load(a.cfg.Policy)
	if err != nil {
		return nil, err
	}
	if err := pol.OpenRelayCheck(a.listenerNames()); err != nil {
		if !pol.AllowOpenRelay() {
			return nil, fmt.Errorf("%s: %w", a.cfg.Policy, err)
		}
		a.log.Warn("OPEN RELAY allowed by the policy (allow_open_relay: true): anyone may send mail anywhere through this proxy", zap.Error(err))
	}
	dockerNATWarnings(a.log, pol.TrustedNetworks())
	return pol, nil
}

// authenticator builds the credential check the config asks for, or nil.
func (a *App) authenticator() (auth.Source, error) {
	if a.authMetrics == nil {
		a.authMetrics = auth.NewMetrics(a.registry)
	}
	src, chain, err := buildSources(&a.cfg.Auth, authBuild{
		backend:  a.backendConfig,
		hostname: a.cfg.Hostname,
		obs:      a.authMetrics,
		info:     func(msg string, kv ...any) { a.log.Sugar().Infow(msg, kv...) },
	})
	if err != nil {
		return nil, err
	}
	if chain != nil {
		a.log.Info("credential sources", zap.Strings("sources", chain.Sources()))
	}
	return src, nil
}

// backendConfig builds the backend leg, with its TLS settings.
func (a *App) backendConfig() (proxy.BackendConfig, error) {
	b := a.cfg.Backend
	out := a.cfg.ProxyBackend()
	out.SpoolDir = filepath.Join(a.cfg.StateDir, "spool")
	if a.checkOnly {
		out.SpoolDir = ""
	} else if err := os.MkdirAll(out.SpoolDir, 0o700); err != nil {
		// A read-only state_dir must not stop mail: the system's temporary
		// folder serves (spool files are unlinked at once either way).
		a.log.Warn("backend spool folder not usable; spooling to the temporary folder", zap.Error(err))
		out.SpoolDir = ""
	}
	if out.TLS == proxy.TLSNone {
		return out, nil
	}
	tc, err := a.backendTLS(b.Address)
	if err != nil {
		return out, err
	}
	out.TLSConfig = tc
	return out, nil
}

// mailboxBackend builds the mailbox leg; with TLS it checks the server's
// certificate as the backend leg does (backend.tls_ca_file,
// backend.tls_skip_verify), against backend.tls_server_name or the host of
// the mailbox address.
func (a *App) mailboxBackend() (mailbox.BackendConfig, error) {
	out := a.cfg.ProxyMailbox()
	if out.TLS == string(proxy.TLSNone) {
		return out, nil
	}
	addr := out.IMAP
	if addr == "" {
		addr = out.POP3
	}
	tc, err := a.backendTLS(addr)
	out.TLSConfig = tc
	return out, err
}

// backendTLS is the TLS client configuration towards a legacy server at
// addr (host:port), from the backend section's TLS keys.
func (a *App) backendTLS(addr string) (*tls.Config, error) {
	b := a.cfg.Backend
	host := b.TLSServerName
	if host == "" {
		host, _, _ = net.SplitHostPort(addr)
	}
	tc := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if b.TLSCAFile != "" {
		pem, err := os.ReadFile(b.TLSCAFile)
		if err != nil {
			return nil, fmt.Errorf("backend.tls_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("backend.tls_ca_file: %s: no PEM certificate found", b.TLSCAFile)
		}
		tc.RootCAs = pool
	}
	if b.TLSSkipVerify {
		a.log.Warn("backend.tls_skip_verify is on: the backend's certificate is not checked")
		tc.InsecureSkipVerify = true
	}
	return tc, nil
}
