package sandbox

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/guest-sdk/python/pack"
)

// Python services through the sandbox: the nuropb.fs mount must serve
// Python's seeking zipimport, every Python service shares one compiled
// runtime, and a service that fails to import is refused with its traceback.

var (
	pyMu     sync.Mutex
	pyPacked = map[string][]byte{}
)

// pythonService packs a Python service (a path relative to the repo root, or
// absolute) with the built runtime; it skips when the runtime is not built,
// and fails under CI=true, which must build it.
func pythonService(t testing.TB, path string) []byte {
	t.Helper()
	if !filepath.IsAbs(path) {
		path = filepath.Join("..", "..", "..", path)
	}
	pyMu.Lock()
	defer pyMu.Unlock()
	if b, ok := pyPacked[path]; ok {
		return b
	}
	b, err := pack.Build(path)
	if errors.Is(err, pack.ErrNoRuntime) {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%v\nCI must build the Python runtime first: scripts/build-python-runtime.sh", err)
		}
		t.Skipf("%v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	pyPacked[path] = b
	return b
}

func pyLimits() Limits {
	l := testLimits()
	l.CallTimeout = 30 * time.Second // instance start imports the stdlib: slow under -race on a loaded machine
	l.MaxInstances = 1
	return l
}

func TestPythonServicesShareOneCompiledRuntime(t *testing.T) {
	if testing.Short() {
		t.Skip("starts CPython instances")
	}
	conf := pythonService(t, "testdata/guests/python/conformance")
	stats := pythonService(t, "modules/examples/python/stats")
	e := testEngine(t)
	before := e.Stats()
	m1 := load(t, e, conf, pyLimits(), &fakeImports{})
	m2 := load(t, e, stats, pyLimits(), &fakeImports{})
	if m1.Manifest().Service != "conformance" || m2.Manifest().Service != "stats" {
		t.Fatalf("manifests %q %q", m1.Manifest().Service, m2.Manifest().Service)
	}
	after := e.Stats()
	if n := after.Compilations - before.Compilations; n != 1 || after.Compiled != 1 {
		t.Fatalf("two Python services cost %d compilations (%d compiled modules held), want 1", n, after.Compiled)
	}
	if m1.key != m2.key || m1.cm != m2.cm {
		t.Fatal("the two services do not share one CompiledModule")
	}

	// The mount serves what Python needs: stdlib imports from the zip
	// (statistics, json, re, datetime), the service's helper module.
	in, _ := abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindRequest, ID: "1", Service: "stats", Method: "summarize",
		Params: mustRaw(t, map[string]any{"values": []any{1, 2, 3, 4}})})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	reply, err := m2.Handle(ctx, in)
	if err != nil {
		t.Fatal(err)
	}
	env, err := abi.Default.DecodeEnvelope(reply)
	if err != nil || env.Error != nil {
		t.Fatalf("summarize: %v %v", err, env.Error)
	}
	var got map[string]any
	if err := abi.Default.Unmarshal(env.Result, &got); err != nil || got["mean"] != 2.5 {
		t.Fatalf("summarize: %v %v", got, err)
	}
	// Closing one keeps the shared code for the other.
	if err := m1.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if e.Stats().Compiled != 1 {
		t.Fatal("closing one Python service released the runtime the other uses")
	}
	if _, err := m2.Handle(ctx, in); err != nil {
		t.Fatal(err)
	}
}

func TestPythonImportErrorIsRefusedWithTraceback(t *testing.T) {
	if testing.Short() {
		t.Skip("starts CPython instances")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "broken.py")
	if err := os.WriteFile(src, []byte("import nuropb\nimport no_such_module_here\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wasm := pythonService(t, src)
	e := testEngine(t)
	imp := &fakeImports{}
	_, err := e.Load(context.Background(), Source{Name: "default/broken.wasm", Tenant: "default", Bytes: wasm, Limits: pyLimits()}, imp)
	var le *LoadError
	if !errors.As(err, &le) || le.Step != StepDescribe {
		t.Fatalf("got %v, want a describe LoadError", err)
	}
	for _, want := range []string{"failed to start", "internal", "Traceback", "/app/broken.py", "No module named 'no_such_module_here'"} {
		if !strings.Contains(le.Reason, want) {
			t.Errorf("reason lacks %q:\n%s", want, le.Reason)
		}
	}
	var ae *abi.Error
	if !errors.As(err, &ae) || ae.Code != abi.CodeInternal {
		t.Errorf("LoadError does not wrap the guest's *abi.Error: %v", err)
	}
	if e.Stats().Compiled != 0 {
		t.Error("a refused module kept its compiled code")
	}
}

func mustRaw(t testing.TB, v any) abi.RawValue {
	t.Helper()
	b, err := abi.Default.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
