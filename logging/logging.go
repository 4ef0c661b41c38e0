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

// Config selects the level and encoding. The zero value means info and json.
type Config struct {
	// Level is debug, info, warn or error. Default info.
	Level string `yaml:"level"`
	// Format is json (default, for log shippers) or console (for people).
	Format string `yaml:"format"`
}

// Validate reports a bad level or format.
func (c Config) Validate() error {
	if _, err := zapcore.ParseLevel(c.level()); err != nil {
		return fmt.Errorf("level: %q is not one of debug, info, warn, error", c.Level)
	}
	switch c.format() {
	case "json", "console":
		return nil
	}
	return fmt.Errorf("format: %q is not one of json, console", c.Format)
}

func (c Config) level() string {
	if c.Level == "" {
		return "info"
	}
	return c.Level
}

func (c Config) format() string {
	if c.Format == "" {
		return "json"
	}
	return c.Format
}

// New builds a logger writing to stderr. Unlike zap's production preset it
// never samples: the per-transaction line is the forensic record and must not
// be dropped under load.
func New(c Config) (*zap.Logger, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	lvl, _ := zapcore.ParseLevel(c.level())
	enc := zap.NewProductionEncoderConfig()
	enc.TimeKey = "ts"
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	enc.EncodeDuration = zapcore.MillisDurationEncoder
	var e zapcore.Encoder
	if c.format() == "console" {
		enc.EncodeLevel = zapcore.CapitalLevelEncoder
		e = zapcore.NewConsoleEncoder(enc)
	} else {
		e = zapcore.NewJSONEncoder(enc)
	}
	core := zapcore.NewCore(e, zapcore.Lock(os.Stderr), zap.NewAtomicLevelAt(lvl))
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(os.Stderr))), nil
}
