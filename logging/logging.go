// Package logging builds tlsguard's zap logger and holds the field names and
// redaction helpers that every package uses, so logs stay greppable and never
// carry a secret.
package logging

import (
	"fmt"
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Config selects the level and encoding; both must be set (the config's
// log section fills them in).
type Config struct {
	// Level is debug, info, warn or error.
	Level string
	// Format is json (for log shippers) or console (for people).
	Format string
}

// Validate reports a bad level or format.
func (c Config) Validate() error {
	if _, err := zapcore.ParseLevel(c.Level); err != nil || c.Level == "" {
		return fmt.Errorf("level: %q is not one of debug, info, warn, error", c.Level)
	}
	switch c.Format {
	case "json", "console":
		return nil
	}
	return fmt.Errorf("format: %q is not one of json, console", c.Format)
}

// New builds a logger writing to stderr. Unlike zap's production preset it
// never samples: the per-transaction line is the forensic record and must not
// be dropped under load.
func New(c Config) (*zap.Logger, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	lvl, _ := zapcore.ParseLevel(c.Level)
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.EncodeDuration = zapcore.MillisDurationEncoder
	var e zapcore.Encoder
	if c.Format == "console" {
		enc.EncodeLevel = zapcore.CapitalLevelEncoder
		e = zapcore.NewConsoleEncoder(enc)
	} else {
		e = zapcore.NewJSONEncoder(enc)
	}
	core := zapcore.NewCore(e, zapcore.Lock(os.Stderr), zap.NewAtomicLevelAt(lvl))
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(os.Stderr))), nil
}
