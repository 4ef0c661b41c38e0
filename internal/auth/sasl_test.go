package auth

import (
	"errors"
	"testing"
)

var errWrong = errors.New("wrong")

func TestLoginServerSteps(t *testing.T) {
	type call struct{ id, user, pass string }
	var got []call
	check := func(id, user, pass string) error {
		got = append(got, call{id, user, pass})
		if pass != "pw" {
			return errWrong
		}
		return nil
	}

	l := NewLoginServer(check)
	ch, done, err := l.Next(nil)
	if string(ch) != "Username:" || done || err != nil {
		t.Fatalf("step 0: %q %v %v", ch, done, err)
	}
	ch, done, err = l.Next([]byte("alice"))
	if string(ch) != "Password:" || done || err != nil {
		t.Fatalf("step 1: %q %v %v", ch, done, err)
	}
	ch, done, err = l.Next([]byte("pw"))
	if ch != nil || !done || err != nil {
		t.Fatalf("step 2: %q %v %v", ch, done, err)
	}
	if len(got) != 1 || got[0] != (call{"", "alice", "pw"}) {
		t.Fatalf("check calls: %+v", got)
	}
	if _, done, err = l.Next([]byte("more")); !done || err == nil {
		t.Fatalf("after done: %v %v", done, err)
	}

	// Initial response is the user name.
	got = nil
	l = NewLoginServer(check)
	ch, done, err = l.Next([]byte("bob"))
	if string(ch) != "Password:" || done || err != nil {
		t.Fatalf("IR: %q %v %v", ch, done, err)
	}
	_, done, err = l.Next([]byte("wrong"))
	if !done || err != errWrong {
		t.Fatalf("wrong password: %v %v", done, err)
	}
	if len(got) != 1 || got[0] != (call{"", "bob", "wrong"}) {
		t.Fatalf("check calls: %+v", got)
	}
}
