package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/emersion/go-smtp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/tlsguard/tlsguard/internal/app"
	"github.com/tlsguard/tlsguard/proxy"
)

func init() {
	register("check", "check a config as serve would load it, without serving (as nginx -t)", runCheck)
}

// runCheck loads what serve loads at start (the config, the files it
// names, the policy with its open-relay self-test, the credential sources,
// the certificates, the backend's TLS settings) and, with --backend, greets
// the backend. It exits 0, or 1 with every problem found, as file:line:
// key: message where a key is at fault. It listens nowhere, asks no ACME CA
// and creates no file; with a cluster section it does not connect to Redis.
func runCheck(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "tlsguard.yaml", "the config file")
	backend := fs.Bool("backend", false, "also connect to the backend and exchange EHLO (and STARTTLS or TLS as configured)")
	if err := fs.Parse(args); err != nil {
		return helpExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "check: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg, err := app.LoadConfig(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "tlsguard: invalid config:\n%v\n", err)
		return 1
	}
	// Warnings (trusted networks behind NAT, an allowed open relay) are
	// what an operator runs check for: they go to stderr as at start.
	enc := zap.NewDevelopmentEncoderConfig()
	enc.TimeKey = ""
	log := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(stderr), zap.WarnLevel))
	problems, bc := app.Check(cfg, log)
	if bc != nil && *backend {
		if err := greetBackend(*bc, cfg.Hostname); err != nil {
			problems = append(problems, err)
		}
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(stderr, p)
		}
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", cfg.File())
	return 0
}

// greetBackend connects to the backend as a session would: TLS first or
// after STARTTLS as configured (verifying its certificate), EHLO, then
// QUIT. Every step is bounded by backend.timeout.
func greetBackend(b proxy.BackendConfig, hostname string) error {
	ctx, cancel := context.WithTimeout(context.Background(), b.Timeout)
	defer cancel()
	d := net.Dialer{}
	conn, err := d.DialContext(ctx, "tcp", b.Address)
	if err != nil {
		return fmt.Errorf("backend %s: %w", b.Address, err)
	}
	defer conn.Close()
	deadline, _ := ctx.Deadline()
	conn.SetDeadline(deadline)
	var c *smtp.Client
	switch b.TLS {
	case proxy.TLSImplicit:
		tc := tls.Client(conn, b.TLSConfig)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fmt.Errorf("backend %s: TLS: %w", b.Address, err)
		}
		c = smtp.NewClient(tc)
	case proxy.TLSStartTLS:
		// go-smtp's client says EHLO localhost before STARTTLS.
		if c, err = smtp.NewClientStartTLS(conn, b.TLSConfig); err != nil {
			return fmt.Errorf("backend %s: STARTTLS: %w", b.Address, err)
		}
	default:
		c = smtp.NewClient(conn)
	}
	if b.TLS != proxy.TLSStartTLS {
		if err := c.Hello(hostname); err != nil {
			return fmt.Errorf("backend %s: greeting or EHLO: %w", b.Address, err)
		}
	}
	if err := c.Quit(); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("backend %s: QUIT: %w", b.Address, err)
	}
	return nil
}
