package upstream

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

func getWithin(b *Client, d time.Duration, auth bool) (*conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	class := Unauthenticated
	if auth {
		class = Authenticated
	}
	return b.get(ctx, class)
}

// With 3 connections and 1 reserved, unauthenticated sessions get 2; the
// third waits and fails, a logged-in one still gets the reserved one, and a
// waiting session gets a slot as soon as one is given back.
func TestBackendSlotsKeepReserve(t *testing.T) {
	b := New(Config{Address: backendAddr(t), Hostname: "test", Timeout: 3 * time.Second, MaxConnections: 3, ReservedAuthenticated: 1, PoolSize: 0}, nil, nil)
	var held []*conn
	for i := 0; i < 2; i++ {
		bc, err := getWithin(b, time.Second, false)
		if err != nil {
			t.Fatalf("unauthenticated %d: %v", i, err)
		}
		held = append(held, bc)
	}
	if _, err := getWithin(b, 100*time.Millisecond, false); !errors.Is(err, errNoSlot) {
		t.Fatalf("a third unauthenticated connection: %v, want errNoSlot", err)
	}
	auth, err := getWithin(b, time.Second, true)
	if err != nil {
		t.Fatalf("the reserved connection for a logged-in session: %v", err)
	}
	if _, err := getWithin(b, 100*time.Millisecond, true); !errors.Is(err, errNoSlot) {
		t.Fatalf("a fourth connection: %v, want errNoSlot (cap 3)", err)
	}
	got := make(chan error, 1)
	go func() {
		bc, err := getWithin(b, 5*time.Second, false)
		if err == nil {
			bc.quit()
		}
		got <- err
	}()
	time.Sleep(50 * time.Millisecond)
	held[0].quit()
	if err := <-got; err != nil {
		t.Fatalf("a waiting session after a slot was freed: %v", err)
	}
	held[1].abort()
	auth.quit()
	auth.quit() // releasing twice frees one slot only
	if n := b.inUse(); n != 0 {
		t.Fatalf("%d connections counted in use after all were closed", n)
	}
}

// Idle pooled connections count towards the cap: what is idle is reused,
// never dialled beside.
func TestBackendSlotsCountIdle(t *testing.T) {
	b := New(Config{Address: backendAddr(t), Hostname: "test", Timeout: 3 * time.Second, MaxConnections: 2, ReservedAuthenticated: 0, PoolSize: 10, PoolIdle: time.Minute}, nil, nil)
	defer b.Drain()
	a1, err1 := getWithin(b, time.Second, false)
	a2, err2 := getWithin(b, time.Second, false)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	b.put(a1)
	b.put(a2)
	for i := 0; i < 2; i++ {
		bc, err := getWithin(b, time.Second, false)
		if err != nil {
			t.Fatal(err)
		}
		if !bc.reused {
			t.Errorf("connection %d was dialled while an idle one was pooled", i)
		}
		defer bc.quit()
	}
	if _, err := getWithin(b, 100*time.Millisecond, true); !errors.Is(err, errNoSlot) {
		t.Fatalf("a third connection: %v, want errNoSlot", err)
	}
}

// A spool keeps small messages in memory and larger ones in a file that is
// never visible on disk; either way it gives back exactly what was written.
func TestSpool(t *testing.T) {
	for _, size := range []int{0, 5000, spoolMemory, spoolMemory + 1, 3*spoolMemory + 17} {
		dir := t.TempDir()
		sp := newSpool(dir)
		want := bytes.Repeat([]byte("0123456789abcdef\r\n"), size/18+1)[:size]
		for p := want; len(p) > 0; {
			n := min(len(p), 1000)
			if _, err := sp.Write(p[:n]); err != nil {
				t.Fatal(err)
			}
			p = p[n:]
		}
		if entries, _ := os.ReadDir(dir); len(entries) != 0 {
			t.Errorf("size %d: the spool left %d file(s) visible", size, len(entries))
		}
		if (sp.file != nil) != (size > spoolMemory) {
			t.Errorf("size %d: in a file: %v", size, sp.file != nil)
		}
		for i := 0; i < 2; i++ { // a replay may need it twice
			var out bytes.Buffer
			if _, err := sp.WriteTo(&out); err != nil || !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("size %d: WriteTo gave %d bytes, %v", size, out.Len(), err)
			}
		}
		sp.Close()
	}
}

// backendAddr is a backend for tests that only connect, greet and QUIT.
func backendAddr(t *testing.T) string {
	addr, _ := scripted(t, nil)
	return addr
}
