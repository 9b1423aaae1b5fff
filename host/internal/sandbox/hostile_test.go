package sandbox

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nuropb/nuropb/abi"
)

// The project's hostile C guests (testdata/guests/c/README.md), each with
// the outcome the README asks of the host.

func TestHostileGuestsRefusedAtLoad(t *testing.T) {
	e := testEngine(t)
	for name, step := range map[string]string{
		"badabi":        StepABI,
		"noexports":     StepExports,
		"unknownimport": StepImports,
		"trapinit":      StepInstantiate,
		"badmanifest":   StepManifest,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := e.Load(context.Background(), Source{Name: name + ".wasm", Bytes: hostileCGuest(t, name), Limits: testLimits()}, &fakeImports{})
			var le *LoadError
			if !errors.As(err, &le) || le.Step != step {
				t.Fatalf("got %v, want a LoadError at step %s", err, step)
			}
			t.Log(err)
		})
	}
}

// Preview1's sock_* calls reach only preopened sockets, of which the sandbox
// has none, so a guest importing them (every CPython build does) loads, and
// finds no socket. testdata/guests/c/forbiddenimport was written when they
// were refused; it now loads and serves.
func TestSocketCallsFindNoSocket(t *testing.T) {
	e := testEngine(t)
	m := load(t, e, hostileCGuest(t, "forbiddenimport"), testLimits(), &fakeImports{})
	if _, err := call(t, m, "run", 5*time.Second); err != nil {
		t.Fatal(err)
	}
	s := load(t, e, cGuest(t, "-DSOCKETS"), testLimits(), &fakeImports{})
	reply, err := call(t, s, "accept", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := result(t, reply); string(got) != "nosocket" {
		t.Fatalf("sock_accept on fds 0-15: %q", got)
	}
}

func TestHostileGuestsAtRun(t *testing.T) {
	e := testEngine(t)
	cases := []struct {
		guest, method string
		codes         []abi.ErrorCode // any of; none means success
	}{
		{"loop", "run", []abi.ErrorCode{abi.CodeTimeout}},
		{"membomb", "run", []abi.ErrorCode{abi.CodeTrapped, abi.CodeResourceExhausted}},
		{"stackbomb", "run", []abi.ErrorCode{abi.CodeTrapped}},
		{"stdoutflood", "run", nil},
		{"badreply", "truncated", []abi.ErrorCode{abi.CodeInternal}},
		{"badreply", "notmap", []abi.ErrorCode{abi.CodeInternal}},
		{"badreply", "indefinite", []abi.ErrorCode{abi.CodeInternal}},
		{"badreply", "trailing", []abi.ErrorCode{abi.CodeInternal}},
		{"badreply", "empty", []abi.ErrorCode{abi.CodeInternal}},
		{"hugereply", "toobig", []abi.ErrorCode{abi.CodeResourceExhausted}},
		{"hugereply", "pastmemory", []abi.ErrorCode{abi.CodeInternal}},
		{"hugereply", "wrap", []abi.ErrorCode{abi.CodeInternal}},
	}
	for _, c := range cases {
		t.Run(c.guest+"/"+c.method, func(t *testing.T) {
			imp := &fakeImports{}
			l := testLimits()
			l.LogLinesPerSec = 100
			m := load(t, e, hostileCGuest(t, c.guest), l, imp)
			start := time.Now()
			timeout := 20 * time.Second // membomb and stackbomb are slow under -race
			if c.guest == "loop" {
				timeout = 300 * time.Millisecond
			}
			_, err := call(t, m, c.method, timeout)
			if len(c.codes) == 0 {
				if err != nil {
					t.Fatal(err)
				}
			} else {
				ae, ok := err.(*abi.Error)
				if !ok || !hasCode(c.codes, ae.Code) || !strings.Contains(ae.Message, m.Name()) {
					t.Fatalf("got %v, want one of %v naming the module", err, c.codes)
				}
				t.Log(ae)
			}
			secs := int(time.Since(start).Seconds()) + 1
			if n := len(imp.lines()); n > l.LogLinesPerSec*(1+secs)+secs+1 {
				t.Errorf("%d log lines in %ds", n, secs)
			}
			if s := m.Stats(); s.Busy != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func hasCode(codes []abi.ErrorCode, c abi.ErrorCode) bool {
	for _, x := range codes {
		if x == c {
			return true
		}
	}
	return false
}
