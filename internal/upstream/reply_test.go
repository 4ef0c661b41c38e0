package upstream

import (
	"io"
	"testing"

	"github.com/emersion/go-smtp"
)

func TestFlattenAndSplitEnhanced(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"one line", "one line"},
		{"5.1.1 a\n5.1.1 b", "5.1.1 a b"},
		{"first\nsecond", "first second"},
	} {
		if got := flatten(tc.in); got != tc.want {
			t.Errorf("flatten(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	// A multi-line reply whose enhanced code is only on the last line (as
	// go-smtp servers send it) keeps that code.
	se := replyOf(&smtp.SMTPError{Code: 550, Message: "Rejected\n5.7.1 see https://help.example/"})
	if se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) {
		t.Errorf("enhanced code lost: %+v", se)
	}
	// A non-SMTP error carries no reply (the session answers 451 4.4.1).
	if replyOf(io.ErrUnexpectedEOF) != nil {
		t.Error("network error taken for a reply")
	}
	// A 2xx where an error was expected is a backend failure.
	if replyOf(&smtp.SMTPError{Code: 250, Message: "ok"}) != nil {
		t.Error("2xx taken for a refusal")
	}
}
