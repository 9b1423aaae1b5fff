package sandbox

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/internal/wasmsection"
)

func TestRustConformance(t *testing.T) {
	e := testEngine(t)
	m := load(t, e, rustGuest(t), testLimits(), &fakeImports{})
	if m.Manifest().Service != "conformance" {
		t.Fatalf("manifest %+v", m.Manifest())
	}
	reply, err := call(t, m, "echo", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	env, err := abi.Default.DecodeEnvelope(reply)
	if err != nil || env.Error != nil || string(env.Result) != "\xa0" {
		t.Fatalf("echo replied %+v, %v", env, err)
	}
	_, err = call(t, m, "panic", 5*time.Second)
	wantCode(t, err, abi.CodeTrapped)
	_, err = call(t, m, "spin", 200*time.Millisecond)
	wantCode(t, err, abi.CodeTimeout)
	if _, err := call(t, m, "echo", 5*time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestEcho(t *testing.T) {
	e := testEngine(t)
	for name, wasm := range map[string]func(testing.TB) []byte{
		"c":  func(t testing.TB) []byte { return cGuest(t) },
		"go": goGuest,
	} {
		t.Run(name, func(t *testing.T) {
			b := wasm(t)
			m := load(t, e, b, testLimits(), &fakeImports{})
			if got, want := m.Manifest().Service, name+"guest"; got != want {
				t.Errorf("service %q, want %q", got, want)
			}
			sum := sha256.Sum256(b)
			if m.Hash() != hex.EncodeToString(sum[:]) {
				t.Errorf("hash %s is not the file's", m.Hash())
			}
			for range 3 {
				echoOK(t, m)
			}
			if s := m.Stats(); s.Calls != 3 || s.Instances != 1 || s.Busy != 0 || s.Traps != 0 {
				t.Errorf("stats %+v", s)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	e := testEngine(t)
	good := cGuest(t)
	cases := []struct {
		name   string
		wasm   func() []byte
		limits func(*Limits)
		step   string
		reason string
	}{
		{"missing export", func() []byte { return cGuest(t, "-DNO_HANDLE") }, nil, StepExports, "missing export nuropb_handle"},
		{"wrong abi", func() []byte { return cGuest(t, "-DBAD_ABI") }, nil, StepABI, "returned 2"},
		{"forbidden wasi import", func() []byte { return cGuest(t, "-DFORBIDDEN") }, nil, StepImports, "sock_open"},
		{"unknown host import", func() []byte { return cGuest(t, "-DEXEC_IMPORT") }, nil, StepImports, "nuropb.exec"},
		{"trap at init", func() []byte { return cGuest(t, "-DTRAP_INIT") }, nil, StepInstantiate, "unreachable"},
		{"bad manifest", func() []byte { return cGuest(t, "-DBAD_MANIFEST") }, nil, StepManifest, "service name"},
		{"not wasm", func() []byte { return []byte("#!/bin/sh\necho hello\n") }, nil, StepCompile, ""},
		{"truncated", func() []byte { return good[:len(good)/2] }, nil, StepCompile, ""},
		{"empty", func() []byte { return nil }, nil, StepRead, "empty"},
		{"memory over limit", func() []byte { return good }, func(l *Limits) { l.MemoryPages = 1 }, StepCompile, ""},
		{"bad limits", func() []byte { return good }, func(l *Limits) { l.MaxInstances = 0 }, StepLimits, "MaxInstances"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := testLimits()
			if c.limits != nil {
				c.limits(&l)
			}
			m, err := e.Load(context.Background(), Source{Name: "x/bad.wasm", Bytes: c.wasm(), Limits: l}, &fakeImports{})
			if err == nil {
				m.Close(context.Background())
				t.Fatal("loaded")
			}
			var le *LoadError
			if !errors.As(err, &le) {
				t.Fatalf("error %T %v is not a *LoadError", err, err)
			}
			if le.Step != c.step || le.File != "x/bad.wasm" || !strings.Contains(le.Reason, c.reason) {
				t.Fatalf("got step %q reason %q, want step %q reason containing %q", le.Step, le.Reason, c.step, c.reason)
			}
			t.Logf("%v", err)
		})
	}
	// Failed loads release their compiled code.
	e.mu.Lock()
	n := len(e.compiled)
	e.mu.Unlock()
	if n != 0 {
		t.Errorf("%d compiled modules still referenced after failed loads", n)
	}
}

func TestTrapThenRecover(t *testing.T) {
	e := testEngine(t)
	cm := load(t, e, cGuest(t), testLimits(), &fakeImports{})
	gm := load(t, e, goGuest(t), testLimits(), &fakeImports{})
	cases := []struct {
		m      *Module
		method string
		want   string
	}{
		{cm, "trap", "unreachable"},
		{cm, "exit", "exited with code 3"},
		{cm, "stack", ""},
		{cm, "membomb", ""},
		{gm, "panic", ""},
		{gm, "membomb", ""},
	}
	for _, c := range cases {
		t.Run(c.m.Manifest().Service+"/"+c.method, func(t *testing.T) {
			before := c.m.Stats().Traps
			_, err := call(t, c.m, c.method, 10*time.Second)
			ae := wantCode(t, err, abi.CodeTrapped)
			if !strings.Contains(ae.Message, c.want) || !strings.Contains(ae.Message, c.m.Name()) {
				t.Errorf("message %q should name the module and contain %q", ae.Message, c.want)
			}
			t.Log(ae)
			if got := c.m.Stats().Traps; got != before+1 {
				t.Errorf("traps %d, want %d", got, before+1)
			}
			echoOK(t, c.m)
		})
	}
}

func TestSpinTimeout(t *testing.T) {
	e := testEngine(t)
	for name, wasm := range map[string]func(testing.TB) []byte{
		"c":  func(t testing.TB) []byte { return cGuest(t) },
		"go": goGuest,
	} {
		t.Run(name, func(t *testing.T) {
			m := load(t, e, wasm(t), testLimits(), &fakeImports{})
			const deadline = 200 * time.Millisecond
			start := time.Now()
			_, err := call(t, m, "spin", deadline)
			took := time.Since(start)
			wantCode(t, err, abi.CodeTimeout)
			if took > deadline+500*time.Millisecond {
				t.Errorf("spin returned %v after its %v deadline", took-deadline, deadline)
			}
			echoOK(t, m)

			// Without a deadline on ctx, CallTimeout bounds the call.
			// A second pre-started instance serves the next call: starting a
			// fresh Go instance can itself take longer than 200 ms on a
			// loaded machine.
			l := testLimits()
			l.CallTimeout = deadline
			l.MinInstances = 2
			m2 := load(t, e, wasm(t), l, &fakeImports{})
			_, err = m2.Handle(context.Background(), request(t, "spin"))
			wantCode(t, err, abi.CodeTimeout)
			echoOK(t, m2)
		})
	}
}

func TestCancelInterrupts(t *testing.T) {
	e := testEngine(t)
	m := load(t, e, cGuest(t), testLimits(), &fakeImports{})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err := m.Handle(ctx, request(t, "spin"))
	wantCode(t, err, abi.CodeUnavailable)
	echoOK(t, m)
}

func TestReplyChecks(t *testing.T) {
	e := testEngine(t)
	m := load(t, e, cGuest(t), testLimits(), &fakeImports{})
	for method, code := range map[string]abi.ErrorCode{
		"badreply":  abi.CodeInternal,
		"notmap":    abi.CodeInternal,
		"oobreply":  abi.CodeInternal,
		"hugereply": abi.CodeResourceExhausted,
		"badlog":    abi.CodeTrapped,
	} {
		t.Run(method, func(t *testing.T) {
			_, err := call(t, m, method, 5*time.Second)
			ae := wantCode(t, err, code)
			if !strings.Contains(ae.Message, m.Name()) {
				t.Errorf("message %q does not name the module", ae.Message)
			}
			t.Log(ae)
			echoOK(t, m)
		})
	}
	// An envelope over the limit never reaches the guest.
	big := make([]byte, testLimits().MaxMessageBytes+1)
	_, err := m.Handle(context.Background(), big)
	wantCode(t, err, abi.CodeResourceExhausted)
}

func TestOutputBecomesLogs(t *testing.T) {
	e := testEngine(t)
	imp := &fakeImports{}
	m := load(t, e, cGuest(t), testLimits(), imp)
	for _, method := range []string{"print", "longline", "log"} {
		if _, err := call(t, m, method, 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	got := imp.lines()
	want := []logLine{
		{abi.LogInfo, "hello from stdout"},
		{abi.LogWarn, "hello from stderr"},
		{abi.LogInfo, "partial"},
		{abi.LogInfo, strings.Repeat("x", maxLogLine) + truncatedMark},
		{abi.LogWarn, "guest says hi"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d lines %q, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("line %d: got %v %.40q, want %v %.40q", i, got[i].level, got[i].msg, want[i].level, want[i].msg)
		}
	}
}

func TestStdoutFloodIsRateLimited(t *testing.T) {
	e := testEngine(t)
	imp := &fakeImports{}
	l := testLimits()
	l.LogLinesPerSec = 50
	l.CallTimeout = time.Minute
	m := load(t, e, cGuest(t), l, imp)
	start := time.Now()
	if _, err := call(t, m, "flood", 60*time.Second); err != nil {
		t.Fatal(err)
	}
	secs := int(time.Since(start).Seconds()) + 1
	lines := imp.lines()
	// The burst, what refilled during the call, and a notice a second.
	if len(lines) > l.LogLinesPerSec*(1+secs)+secs+1 {
		t.Fatalf("%d lines logged from a 50000-line flood at %d lines/s", len(lines), l.LogLinesPerSec)
	}
	last := lines[len(lines)-1].msg
	if !strings.Contains(last, "log lines dropped") {
		t.Fatalf("no drop notice; last line %q", last)
	}
	t.Logf("%d lines kept; %s", len(lines), last)
}

func TestCallAndSend(t *testing.T) {
	e := testEngine(t)
	imp := &fakeImports{}
	m := load(t, e, cGuest(t), testLimits(), imp)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var sawDeadline bool
	imp.call = func(ctx context.Context, req []byte) []byte {
		_, sawDeadline = ctx.Deadline()
		b, _ := abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindResponse, Result: abi.RawValue{0x63, 'y', 'e', 's'}})
		return b
	}
	req := request(t, "call")
	reply, err := m.Handle(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := abi.Default.DecodeEnvelope(result(t, reply))
	if err != nil || string(resp.Result) != "\x63yes" {
		t.Fatalf("guest got response %+v, %v", resp, err)
	}
	if !bytes.Equal(imp.calls[0], req) || !sawDeadline {
		t.Errorf("Imports.Call got %x (deadline %v), want the guest's request %x", imp.calls[0], sawDeadline, req)
	}

	// A response over the limit reaches the guest as an error envelope.
	imp.call = func(context.Context, []byte) []byte { return make([]byte, 2<<20) }
	reply, err = m.Handle(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	resp, err = abi.Default.DecodeEnvelope(result(t, reply))
	if err != nil || resp.Error == nil || resp.Error.Code != abi.CodeResourceExhausted {
		t.Fatalf("guest got %+v, %v; want a resource_exhausted error envelope", resp, err)
	}

	imp.send = func(context.Context, []byte) error { return abi.Errorf(abi.CodeForbidden, "no") }
	reply, err = m.Handle(ctx, request(t, "send"))
	if err != nil {
		t.Fatal(err)
	}
	if got := result(t, reply); abi.SendError(int32(got[0]-'0')) == nil || abi.CodeOf(abi.SendError(int32(got[0]-'0'))) != abi.CodeForbidden {
		t.Errorf("guest got send status %q", got)
	}
}

func TestConcurrency(t *testing.T) {
	e := testEngine(t)
	l := testLimits()
	l.MaxInstances = 3
	m := load(t, e, cGuest(t), l, &fakeImports{})
	var wg sync.WaitGroup
	errs := make(chan error, l.MaxInstances)
	for range l.MaxInstances {
		wg.Go(func() {
			_, err := call(t, m, "sleep", 10*time.Second)
			errs <- err
		})
	}
	// All MaxInstances calls are in a guest at once.
	for deadline := time.Now().Add(10 * time.Second); m.Stats().Busy < l.MaxInstances; {
		if time.Now().After(deadline) {
			t.Fatalf("never %d calls in parallel: %+v", l.MaxInstances, m.Stats())
		}
		time.Sleep(time.Millisecond)
	}
	// One more waits for an instance, and gives up at its deadline.
	_, err := call(t, m, "echo", 20*time.Millisecond)
	if ae := wantCode(t, err, abi.CodeTimeout); !strings.Contains(ae.Message, "free instance") {
		t.Errorf("message %q", ae.Message)
	}
	// One that waits long enough gets an instance.
	echoOK(t, m)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if s := m.Stats(); s.Instances != l.MaxInstances || s.Busy != 0 {
		t.Errorf("stats %+v", s)
	}
}

func TestCloseWaitsForCalls(t *testing.T) {
	e := testEngine(t)
	m := load(t, e, cGuest(t), testLimits(), &fakeImports{})
	done := make(chan error, 1)
	go func() {
		_, err := call(t, m, "sleep", 10*time.Second)
		done <- err
	}()
	for m.Stats().Busy == 0 {
		time.Sleep(time.Millisecond)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Close returns once the call has left the instance; the caller's
	// goroutine may still be on its way to report it.
	if busy := m.Stats().Busy; busy != 0 {
		t.Fatalf("Close returned with %d calls still in an instance", busy)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("in-flight call failed: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the in-flight call never returned")
	}
	_, err := call(t, m, "echo", time.Second)
	wantCode(t, err, abi.CodeUnavailable)
	if s := m.Stats(); s.Instances != 0 {
		t.Errorf("stats after close %+v", s)
	}
}

func TestCloseInterruptsAtItsDeadline(t *testing.T) {
	e := testEngine(t)
	m := load(t, e, cGuest(t), testLimits(), &fakeImports{})
	done := make(chan error, 1)
	go func() {
		_, err := call(t, m, "spin", time.Minute)
		done <- err
	}()
	for m.Stats().Busy == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := m.Close(ctx); err == nil {
		t.Error("Close reported no error with a call still spinning")
	}
	select {
	case err := <-done:
		wantCode(t, err, abi.CodeUnavailable)
	case <-time.After(5 * time.Second):
		t.Fatal("spinning call not interrupted by Close")
	}
}

func TestIdenticalBytesShareCode(t *testing.T) {
	e := testEngine(t)
	wasm := cGuest(t)
	ctx := context.Background()
	a, err := e.Load(ctx, Source{Name: "a.wasm", Bytes: wasm, Limits: testLimits()}, &fakeImports{})
	if err != nil {
		t.Fatal(err)
	}
	b := load(t, e, bytes.Clone(wasm), testLimits(), &fakeImports{})
	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	echoOK(t, b)
	c := load(t, e, wasm, testLimits(), &fakeImports{})
	echoOK(t, c)
	e.mu.Lock()
	n := len(e.compiled)
	e.mu.Unlock()
	if n != 1 {
		t.Errorf("%d compiled modules for one set of bytes", n)
	}
}

// withFS appends a nuropb.fs custom section holding a zip of files.
func withFS(t testing.TB, wasm []byte, files map[string]string) []byte {
	var z bytes.Buffer
	zw := zip.NewWriter(&z)
	for name, body := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte(body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := wasmsection.Append(wasm, wasmsection.FSSection, z.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestFSMount(t *testing.T) {
	e := testEngine(t)
	plain := cGuest(t)
	wasm := withFS(t, plain, map[string]string{"data/hello.txt": "hello from the archive"})
	other := withFS(t, plain, map[string]string{"data/hello.txt": "another version"})
	m := load(t, e, wasm, testLimits(), &fakeImports{})
	m2 := load(t, e, other, testLimits(), &fakeImports{})
	for mod, want := range map[*Module]string{m: "hello from the archive", m2: "another version"} {
		reply, err := call(t, mod, "readfile", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got := result(t, reply); string(got) != want {
			t.Errorf("guest read %q, want %q", got, want)
		}
		reply, err = call(t, mod, "writefile", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if got := result(t, reply); string(got) != "refused" {
			t.Errorf("guest could write to the mount: %q", got)
		}
	}
	sum := sha256.Sum256(wasm)
	if m.Hash() != hex.EncodeToString(sum[:]) {
		t.Error("Hash is not of the whole file")
	}
	if m.key != m2.key {
		t.Error("modules differing only in nuropb.fs do not share compiled code")
	}
	// Without the mount, nothing is there.
	m3 := load(t, e, plain, testLimits(), &fakeImports{})
	reply, err := call(t, m3, "readfile", 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := result(t, reply); string(got) != "nofile" {
		t.Errorf("guest without nuropb.fs read %q", got)
	}

	// A section that is not a zip is refused at load.
	bad, _ := wasmsection.Append(plain, wasmsection.FSSection, []byte("not a zip"))
	_, err = e.Load(context.Background(), Source{Name: "bad.wasm", Bytes: bad, Limits: testLimits()}, &fakeImports{})
	var le *LoadError
	if !errors.As(err, &le) || le.Step != StepRead {
		t.Fatalf("got %v, want a read LoadError", err)
	}
	// So are two nuropb.fs sections: which one would be mounted?
	twice, _ := wasmsection.Append(wasm, wasmsection.FSSection, nil)
	_, err = e.Load(context.Background(), Source{Name: "twice.wasm", Bytes: twice, Limits: testLimits()}, &fakeImports{})
	if !errors.As(err, &le) || le.Step != StepRead {
		t.Fatalf("got %v, want a read LoadError", err)
	}
}

func TestSplitFS(t *testing.T) {
	wasm := []byte("\x00asm\x01\x00\x00\x00\x01\x04\x01\x60\x00\x00")
	withSec, _ := wasmsection.Append(wasm, wasmsection.FSSection, []byte("Z"))
	code, payload, err := splitFS(withSec)
	if err != nil || string(payload) != "Z" || !bytes.Equal(code, wasm) {
		t.Fatalf("got %x %q %v", code, payload, err)
	}
	if code, payload, err := splitFS(wasm); err != nil || payload != nil || !bytes.Equal(code, wasm) {
		t.Fatalf("without a section: %x %q %v", code, payload, err)
	}
	// A truncated file goes to the compiler as it is, which names the fault.
	if code, payload, err := splitFS(withSec[:10]); err != nil || payload != nil || len(code) != 10 {
		t.Fatalf("truncated: %x %q %v", code, payload, err)
	}
}
