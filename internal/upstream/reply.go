package upstream

import (
	"errors"
	"strconv"
	"strings"

	"github.com/emersion/go-smtp"
)

// replyOf is the backend's own refusal in err, flattened to one line and
// otherwise verbatim; nil when err carries none the client could be shown
// (network, timeout, or a reply code outside 4xx and 5xx where an error was
// expected).
func replyOf(err error) *smtp.SMTPError {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return nil
	}
	out := *se
	if out.EnhancedCode == smtp.EnhancedCodeNotSet {
		// go-smtp misparses enhanced codes of multi-line replies whose code
		// is only on a later line: recover it, last line first.
		lines := strings.Split(out.Message, "\n")
		for i := len(lines) - 1; i >= 0; i-- {
			if ec, rest, ok := splitEnhanced(lines[i]); ok {
				out.EnhancedCode = ec
				lines[i] = rest
				out.Message = strings.Join(lines, "\n")
				break
			}
		}
	}
	out.Message = flatten(out.Message)
	if out.Code < 400 || out.Code > 599 {
		return nil
	}
	return &out
}

// okReply is the backend's reply to the final dot as go-smtp sends a custom
// success: an *smtp.SMTPError with code 250, on one line, its enhanced code
// kept (2.0.0 when it gave none).
func okReply(status string) *smtp.SMTPError {
	ec, text, ok := splitEnhanced(flatten(status))
	if !ok {
		ec, text = smtp.EnhancedCode{2, 0, 0}, flatten(status)
	}
	return &smtp.SMTPError{Code: 250, EnhancedCode: ec, Message: text}
}

// flatten joins a multi-line reply into one line, dropping repeated
// enhanced codes.
func flatten(msg string) string {
	if !strings.Contains(msg, "\n") {
		return msg
	}
	lines := strings.Split(msg, "\n")
	for i, l := range lines {
		if _, rest, ok := splitEnhanced(l); ok && i > 0 {
			lines[i] = rest
		}
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, " ")
}

// splitEnhanced splits "5.1.1 text" into its code and text.
func splitEnhanced(s string) (smtp.EnhancedCode, string, bool) {
	code, rest, _ := strings.Cut(s, " ")
	parts := strings.Split(code, ".")
	if len(parts) != 3 {
		return smtp.EnhancedCode{}, s, false
	}
	var ec smtp.EnhancedCode
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 {
			return smtp.EnhancedCode{}, s, false
		}
		ec[i] = n
	}
	if ec[0] != 2 && ec[0] != 4 && ec[0] != 5 {
		return smtp.EnhancedCode{}, s, false
	}
	return ec, rest, true
}
