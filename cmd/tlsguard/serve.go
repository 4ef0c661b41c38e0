package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/tlsguard/tlsguard/internal/app"
	"github.com/tlsguard/tlsguard/internal/config"
	"github.com/tlsguard/tlsguard/logging"
)

func init() {
	register("serve", "run the proxy", runServe)
}

func runServe(args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "tlsguard.yaml", "the config file")
	if err := fs.Parse(args); err != nil {
		return helpExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg, err := app.LoadConfig(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "tlsguard: invalid config:\n%v\n", err)
		return 2
	}
	log, level, err := logging.NewLevel(cfg.LogConfig())
	if err != nil {
		fmt.Fprintf(stderr, "tlsguard: %v\n", err)
		return 2
	}
	defer log.Sync()
	// Named, so that every line has the "logger" key the README documents
	// (components get "tlsguard.certs", "tlsguard.backend", ...).
	log = log.Named("tlsguard")
	if err := serve(cfg, log, level); err != nil {
		log.Error("tlsguard stopped", zap.Error(err))
		fmt.Fprintf(stderr, "tlsguard: %v\n", err)
		return 1
	}
	// The last line of a clean exit, so that a log shows the process ended
	// rather than died.
	log.Info("tlsguard stopped")
	return 0
}

// serve runs the server until SIGTERM or SIGINT; SIGHUP reloads, and the
// policy file is polled for changes on the same goroutine.
func serve(cfg *config.Config, log *zap.Logger, level zap.AtomicLevel) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	a := app.New(cfg, log, level)
	if err := a.Start(ctx); err != nil {
		return err
	}
	poll := time.NewTicker(app.PolicyWatchInterval)
	defer poll.Stop()
	for {
		select {
		case <-poll.C:
			a.PollPolicy()
		case <-hup:
			a.Reload()
		case <-ctx.Done():
			return a.Shutdown()
		}
	}
}
