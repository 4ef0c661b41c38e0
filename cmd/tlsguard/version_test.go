package main

import (
	"runtime/debug"
	"testing"
)

// The version and commit stamped with -ldflags -X win; without them the
// toolchain's embedded module version and VCS revision name the build.
func TestBuildVersion(t *testing.T) {
	vcs := &debug.BuildInfo{
		Main: debug.Module{Version: "(devel)"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef0123456789abcdef01234567"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	installed := &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "false"}}}
	for _, tc := range []struct {
		name, v, c string
		bi         *debug.BuildInfo
		wantV      string
		wantC      string
	}{
		{"stamped", "v1.4.0-3-gdeadbee", "deadbeefcafe", vcs, "v1.4.0-3-gdeadbee", "deadbeefcafe"},
		{"vcs", "", "", vcs, "(devel)", "0123456789abcdef0123456789abcdef01234567-dirty"},
		{"go install", "", "", installed, "v1.2.3", "abc"},
		{"nothing", "", "", &debug.BuildInfo{}, "(devel)", "unknown"},
		{"no build info", "", "", nil, "(devel)", "unknown"},
	} {
		v, c := buildVersion(tc.v, tc.c, tc.bi)
		if v != tc.wantV || c != tc.wantC {
			t.Errorf("%s: got %q %q, want %q %q", tc.name, v, c, tc.wantV, tc.wantC)
		}
	}
}

// --help exits 0 for every command; a usage error exits 2.
func TestHelpExitCodes(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"serve", "--help"}, {"healthcheck", "-h"}, {"version", "--help"},
		{"policy", "--help"}, {"policy", "check", "--help"}, {"policy", "explain", "-h"}, {"policy", "test", "--help"}} {
		if code, _, _ := runCmd(args...); code != 0 {
			t.Errorf("%v: exit %d, want 0", args, code)
		}
	}
	for _, args := range [][]string{{"serve", "--nope"}, {"policy", "test"}, {"policy", "check"}, {"version", "x"}} {
		if code, _, _ := runCmd(args...); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
}
