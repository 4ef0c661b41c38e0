package main

import (
	"flag"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// Set by the build with -ldflags "-X main.version=... -X main.commit=...",
// as the Dockerfile does from `git describe`. Empty in a plain `go build`
// or `go install`, which embed the commit instead (buildVersion).
var (
	version string
	commit  string
)

func init() {
	register("version", "print the version, commit and Go version", func(args []string, stdout, stderr io.Writer) int {
		fs := flag.NewFlagSet("version", flag.ContinueOnError)
		fs.SetOutput(stderr)
		if err := fs.Parse(args); err != nil {
			return helpExit(err)
		}
		if fs.NArg() > 0 {
			fmt.Fprintf(stderr, "version: unexpected argument %q\n", fs.Arg(0))
			return 2
		}
		bi, _ := debug.ReadBuildInfo()
		v, c := buildVersion(version, commit, bi)
		fmt.Fprintf(stdout, "tlsguard %s\ncommit %s\ngo %s %s/%s\n", v, c, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return 0
	})
}

// buildVersion names the build: the version and commit the build stamped
// in with -ldflags -X when it did, else what the Go toolchain embedded: the
// module version (set by `go install module@version`) and the VCS revision
// of the checkout, marked "-dirty" when it had uncommitted changes.
func buildVersion(stampedVersion, stampedCommit string, bi *debug.BuildInfo) (v, c string) {
	v, c = stampedVersion, stampedCommit
	var rev string
	modified := false
	if bi != nil {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				modified = s.Value == "true"
			}
		}
		if v == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
	}
	if c == "" && rev != "" {
		c = rev
		if modified {
			c += "-dirty"
		}
	}
	if v == "" {
		v = "(devel)"
	}
	if c == "" {
		c = "unknown"
	}
	return v, c
}
