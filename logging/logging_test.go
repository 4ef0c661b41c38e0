package logging_test

import (
	"strings"
	"testing"

	"github.com/tlsguard/tlsguard/logging"
)

func TestValidate(t *testing.T) {
	for _, c := range []logging.Config{{Level: "info", Format: "json"}, {Level: "debug", Format: "console"}, {Level: "warn", Format: "json"}} {
		if err := c.Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	for _, tc := range []struct {
		c    logging.Config
		want string
	}{
		{logging.Config{Level: "loud", Format: "json"}, `level: "loud"`},
		{logging.Config{Level: "info", Format: "xml"}, `format: "xml"`},
	} {
		if err := tc.c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: got %v, want %q", tc.c, err, tc.want)
		}
	}
}

// The production preset samples repeated messages; ours must not, or
// transaction lines would be lost under load.
func TestNoSampling(t *testing.T) {
	log, err := logging.New(logging.Config{Level: "info", Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	ce := 0
	for i := 0; i < 500; i++ {
		if log.Check(0, "transaction") != nil {
			ce++
		}
	}
	if ce != 500 {
		t.Fatalf("only %d of 500 identical lines would be written", ce)
	}
}
