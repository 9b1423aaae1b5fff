package amqptest

import (
	"net"
	"runtime"
	"testing"
)

// fakeTB records how Require ends the test instead of ending this one;
// Require calls nothing else on it.
type fakeTB struct {
	testing.TB
	fataled, skipped bool
}

func (f *fakeTB) Helper()               {}
func (f *fakeTB) Fatalf(string, ...any) { f.fataled = true; runtime.Goexit() }
func (f *fakeTB) Skipf(string, ...any)  { f.skipped = true; runtime.Goexit() }

func TestRequireFailsInCIAndSkipsElsewhere(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := l.Addr().String()
	_ = l.Close() // nothing listens there now
	for _, ci := range []string{"true", ""} {
		t.Setenv("CI", ci)
		f := &fakeTB{}
		done := make(chan struct{})
		go func() { defer close(done); Require(f, dead) }()
		<-done
		if ci == "true" && (!f.fataled || f.skipped) {
			t.Fatalf("CI=true: fataled=%v skipped=%v, want a failure", f.fataled, f.skipped)
		}
		if ci == "" && (!f.skipped || f.fataled) {
			t.Fatalf("CI unset: fataled=%v skipped=%v, want a skip", f.fataled, f.skipped)
		}
	}
}
