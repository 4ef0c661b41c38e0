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
	if err := ValidLevel(c.Level); err != nil {
		return fmt.Errorf("level: %w", err)
	}
	if err := ValidFormat(c.Format); err != nil {
		return fmt.Errorf("format: %w", err)
	}
	return nil
}

// ValidLevel reports a level that is not debug, info, warn or error.
func ValidLevel(level string) error {
	if _, err := zapcore.ParseLevel(level); err != nil || level == "" {
		return fmt.Errorf("%q is not one of debug, info, warn, error", level)
	}
	return nil
}

// ValidFormat reports a format that is not json or console.
func ValidFormat(format string) error {
	switch format {
	case "json", "console":
		return nil
	}
	return fmt.Errorf("%q is not one of json, console", format)
}

// New builds a logger writing to stderr. Unlike zap's production preset it
// never samples: the per-transaction line is the forensic record and must not
// be dropped under load.
func New(c Config) (*zap.Logger, error) {
	log, _, err := NewLevel(c)
	return log, err
}

// NewLevel is New, also returning the logger's level, which SetLevel
// changes while it runs (log.level applies on reload).
func NewLevel(c Config) (*zap.Logger, zap.AtomicLevel, error) {
	if err := c.Validate(); err != nil {
		return nil, zap.AtomicLevel{}, err
	}
	lvl, _ := zapcore.ParseLevel(c.Level)
	level := zap.NewAtomicLevelAt(lvl)
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
	core := zapcore.NewCore(e, zapcore.Lock(os.Stderr), level)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(os.Stderr))), level, nil
}

// SetLevel changes level to c.Level, which Validate has accepted.
func SetLevel(level zap.AtomicLevel, c Config) {
	if l, err := zapcore.ParseLevel(c.Level); err == nil {
		level.SetLevel(l)
	}
}
