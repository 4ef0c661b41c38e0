package proxy

import (
	"strings"
	"testing"
)

func TestSafeHeloName(t *testing.T) {
	for in, want := range map[string]string{
		"client.test":        "client.test",
		"[192.0.2.1]":        "[192.0.2.1]",
		"evil\r\nX-Injected": "evil__X-Injected",
		"a b;c":              "a_b_c",
		"":                   "unknown",
	} {
		if got := safeHeloName(in); got != want {
			t.Errorf("safeHeloName(%q) = %q, want %q", in, got, want)
		}
	}
	if got := safeHeloName(strings.Repeat("h", 1000)); len(got) > 255 {
		t.Errorf("long HELO kept %d bytes", len(got))
	}
}
