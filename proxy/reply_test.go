package proxy

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// Contract: every error crosses into go-smtp at session.reply. A bare
// *smtp.SMTPError passes as it is; anything else (even one wrapping an
// SMTPError) becomes 451 4.3.0 naming the session, with the detail only in
// the log.
func TestReplyBoundary(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	s := &session{srv: &Server{log: zap.New(core)}, conn: &sessionRecord{id: "sess42"}}

	if s.reply(nil) != nil {
		t.Error("reply(nil) is not nil")
	}
	bare := &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "no"}
	if got := s.reply(bare); got != bare {
		t.Errorf("a bare SMTPError became %v", got)
	}

	for _, err := range []error{
		errors.New("dial tcp 10.0.0.7:25: secret detail"),
		fmt.Errorf("wrapped: %w", bare),
	} {
		got, ok := s.reply(err).(*smtp.SMTPError)
		if !ok || got.Code != 451 || got.EnhancedCode != (smtp.EnhancedCode{4, 3, 0}) {
			t.Fatalf("reply(%q) = %#v, want 451 4.3.0", err, got)
		}
		if !strings.Contains(got.Message, "sess42") || strings.Contains(got.Message, "secret") || strings.Contains(got.Message, "wrapped") {
			t.Errorf("reply text %q: want the session id and no detail", got.Message)
		}
	}
	entries := logs.FilterMessage("internal error").All()
	if len(entries) != 2 || !strings.Contains(entries[0].ContextMap()["error"].(string), "secret detail") ||
		entries[0].ContextMap()["session"] != "sess42" {
		t.Errorf("the detail is not in the log with the session id: %+v", entries)
	}
}
