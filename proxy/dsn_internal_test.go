package proxy

import (
	"slices"
	"testing"

	"github.com/emersion/go-smtp"
)

// The NOTIFY set forwarded for each mode, for a client nobody vouches for
// and for one that is logged in or trusted.
func TestDSNNotifyMapping(t *testing.T) {
	const (
		S = smtp.DSNNotifySuccess
		D = smtp.DSNNotifyDelayed
		F = smtp.DSNNotifyFailure
		N = smtp.DSNNotifyNever
	)
	type set = []smtp.DSNNotify
	cases := []struct {
		mode          DSNMode
		trusted       bool
		in            set
		kept, removed set
	}{
		// Not logged in, not trusted: only what reduces reports passes.
		{DSNAuthenticated, false, nil, nil, nil},
		{DSNAuthenticated, false, set{S}, set{N}, set{S}},
		{DSNAuthenticated, false, set{D}, set{N}, set{D}},
		{DSNAuthenticated, false, set{S, D}, set{N}, set{S, D}},
		{DSNAuthenticated, false, set{S, F}, set{F}, set{S}},
		{DSNAuthenticated, false, set{D, F, S}, set{F}, set{D, S}},
		{DSNAuthenticated, false, set{F}, set{F}, nil},
		{DSNAuthenticated, false, set{N}, set{N}, nil},
		// Logged in or trusted: as asked.
		{DSNAuthenticated, true, set{S, D, F}, set{S, D, F}, nil},
		{DSNAuthenticated, true, set{S}, set{S}, nil},
		// all: as asked, whoever asks.
		{DSNAll, false, set{S}, set{S}, nil},
		{DSNAll, false, set{S, D}, set{S, D}, nil},
		// none: nothing (go-smtp has refused it already; never forwarded).
		{DSNNone, true, set{S}, nil, set{S}},
		{DSNNone, false, set{F}, nil, set{F}},
		{DSNNone, false, nil, nil, nil},
	}
	for _, c := range cases {
		kept, removed := dsnNotify(c.mode, c.trusted, c.in)
		if !slices.Equal(kept, c.kept) || !slices.Equal(removed, c.removed) {
			t.Errorf("dsnNotify(%s, trusted=%v, %v) = %v, removed %v; want %v, removed %v",
				c.mode, c.trusted, c.in, kept, removed, c.kept, c.removed)
		}
		if !validNotify(kept) {
			t.Errorf("dsnNotify(%s, %v, %v) forwards an invalid set %v", c.mode, c.trusted, c.in, kept)
		}
	}
}

// validNotify is RFC 3461 4.1's rule for a NOTIFY value: NEVER alone, or
// a set of SUCCESS, FAILURE and DELAY without repeats.
func validNotify(n []smtp.DSNNotify) bool {
	seen := map[smtp.DSNNotify]bool{}
	for _, v := range n {
		if seen[v] || (v == smtp.DSNNotifyNever && len(n) > 1) {
			return false
		}
		seen[v] = true
	}
	return true
}
