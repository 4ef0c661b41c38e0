package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/term"

	"github.com/tlsguard/tlsguard/internal/app"
	"github.com/tlsguard/tlsguard/internal/auth"
	"github.com/tlsguard/tlsguard/internal/config"
)

func init() {
	register("auth", "check a login against the configured credential sources", runAuth)
}

const authUsage = `usage:
  tlsguard auth test [--config FILE] USER
      read USER's password (from the terminal without echo, or one line of
      stdin), ask the sources of auth in the config as a login would, and
      print which source decided, the user's groups and addresses; no mail
      is sent and nothing is counted. Exit 0 if the password is right, 1 if
      not, 3 if a source could not answer.
`

func runAuth(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "test" {
		fmt.Fprint(stderr, authUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
			return 0
		}
		return 2
	}
	fs := flag.NewFlagSet("auth test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgFile := fs.String("config", "tlsguard.yaml", "the config file")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() != 1 {
		fmt.Fprint(stderr, authUsage)
		return 2
	}
	user := fs.Arg(0)
	cfg, err := config.Load(*cfgFile)
	if err != nil {
		printLoadError(stderr, err)
		return 2
	}
	// The cache would only ever see this one login: ask the sources.
	cfg.Auth.Cache.TTL = new(time.Duration)
	cfg.Auth.Cache.NegativeTTL = 0
	src, err := app.Authenticator(cfg, zap.NewNop())
	if err != nil {
		fmt.Fprintf(stderr, "auth test: %v\n", err)
		return 2
	}
	if src == nil {
		fmt.Fprintln(stderr, "auth test: the config has no credential source (auth.sources, auth.users_file or auth.backend)")
		return 2
	}
	pass, err := readPassword(os.Stdin, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "auth test: reading the password: %v\n", err)
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Backend.Timeout+5*time.Second)
	defer cancel()
	id, err := src.Authenticate(ctx, user, pass)
	switch {
	case err == nil:
		fmt.Fprintf(stdout, "ok: %s logged in\nsource: %s\ngroups: %s\naddresses: %s\n", user, id.Source,
			strings.Join(id.Groups, "; "), strings.Join(id.Addresses, ", "))
		return 0
	case auth.Temporary(err):
		fmt.Fprintf(stdout, "unavailable: %v\nsource: %s\n(a client would get 454 4.7.0 and retry)\n", err, auth.SourceOf(err))
		return 3
	}
	source := auth.SourceOf(err)
	if source == "" {
		source = "(no source knows the user)"
	}
	fmt.Fprintf(stdout, "refused: %s\nsource: %s\n(a client would get 535 5.7.8)\n", auth.Result(err), source)
	return 1
}

// readPassword reads the password from the terminal without echo, or one
// line from stdin when it is not a terminal.
func readPassword(in *os.File, prompt io.Writer) (string, error) {
	if term.IsTerminal(int(in.Fd())) {
		fmt.Fprint(prompt, "Password: ")
		b, err := term.ReadPassword(int(in.Fd()))
		fmt.Fprintln(prompt)
		return string(b), err
	}
	line, err := bufio.NewReader(io.LimitReader(in, 4096)).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}
