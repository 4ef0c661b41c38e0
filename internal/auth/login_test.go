package auth

import (
	"context"
	"errors"
	"net/netip"
	"testing"
	"time"
)

type fixedSource struct{ err error }

func (f fixedSource) Authenticate(_ context.Context, user, _ string) (Identity, error) {
	return Identity{User: user, Source: "fixed"}, f.err
}

// Login: a right password is LoginOK and remembered; wrong ones are
// counted until the address's budget is spent (LoginFailedOver, then
// LoginRefusedHangUp); a source that is down is LoginTempFail and costs
// nothing; a bad name or a foreign authorization identity is a failure.
func TestThrottleLogin(t *testing.T) {
	th := NewThrottle(ThrottleLimits{MaxFailures: 2, UserMaxFailures: 10, FailWindow: time.Hour, Remember: time.Hour, MaxConcurrent: 2})
	ip := netip.MustParseAddr("192.0.2.1")
	ctx := context.Background()
	if o := th.Login(ctx, time.Second, fixedSource{errors.New("down")}, ip, "", "alice", "pw"); o.Verdict != LoginTempFail || o.Err == nil {
		t.Errorf("source down: %+v", o)
	}
	if o := th.Login(ctx, time.Second, fixedSource{}, ip, "", "alice", "pw"); o.Verdict != LoginOK || o.Source != "fixed" || !o.Checked {
		t.Errorf("right password: %+v", o)
	}
	if !th.Known("alice", AddrKey(ip)) {
		t.Error("a login is not remembered")
	}
	if o := th.Login(ctx, time.Second, fixedSource{}, ip, "bob", "alice", "pw"); o.Verdict != LoginFailed || o.Checked {
		t.Errorf("foreign authorization identity: %+v", o)
	}
	if o := th.Login(ctx, time.Second, fixedSource{ErrBadPassword}, ip, "", "alice", "pw"); o.Verdict != LoginFailedOver {
		t.Errorf("second failure: %+v", o)
	}
	if o := th.Login(ctx, time.Second, fixedSource{}, ip, "", "alice", "pw"); o.Verdict != LoginRefusedHangUp {
		t.Errorf("after the budget is spent: %+v", o)
	}
	if o := th.Login(ctx, time.Second, fixedSource{}, netip.MustParseAddr("192.0.2.2"), "", "bad\x00name", "pw"); o.Verdict != LoginFailed {
		t.Errorf("bad user name: %+v", o)
	}
}
