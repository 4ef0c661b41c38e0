package proxy

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

func TestLimitReader(t *testing.T) {
	e552 := &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "too big"}
	for _, tc := range []struct {
		n, limit int
		fail     bool
	}{{10, 10, false}, {11, 10, true}, {0, 10, false}, {5000, 100, true}} {
		var got bytes.Buffer
		_, err := io.Copy(&got, &limitReader{r: strings.NewReader(strings.Repeat("x", tc.n)), left: int64(tc.limit), err: e552})
		var se *smtp.SMTPError
		if tc.fail != errors.As(err, &se) || (tc.fail && se.Code != 552) {
			t.Errorf("%d bytes, limit %d: err %v", tc.n, tc.limit, err)
		}
		if !tc.fail && got.Len() != tc.n {
			t.Errorf("%d bytes, limit %d: read %d", tc.n, tc.limit, got.Len())
		}
		if tc.fail && got.Len() > tc.limit+1 {
			t.Errorf("read %d bytes past a limit of %d", got.Len(), tc.limit)
		}
	}
}
