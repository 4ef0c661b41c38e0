package main

import (
	"fmt"
	"io"
	"runtime/debug"
)

func init() {
	register("version", "print the version", func(_ []string, stdout, _ io.Writer) int {
		v := "(devel)"
		if bi, ok := debug.ReadBuildInfo(); ok {
			v = bi.Main.Version
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" && len(s.Value) >= 12 {
					v += " " + s.Value[:12]
				}
			}
		}
		fmt.Fprintln(stdout, "tlsguard", v)
		return 0
	})
}
