package watch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Tests write real files into t.TempDir() the way tools do and check what
// the callbacks saw. A callback records the file's size and hash at the
// moment it runs, so a half-written file would show.

// module returns a well-formed WebAssembly binary of about n bytes: the
// header and one custom section "pad" filled with tag. Any strict prefix of
// it longer than the header fails to parse, like a half-copied module.
func module(n int, tag byte) []byte {
	payload := bytes.Repeat([]byte{tag}, n)
	body := append([]byte{3, 'p', 'a', 'd'}, payload...)
	out := []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00, 0x00}
	size := uint32(len(body))
	for {
		b := byte(size & 0x7f)
		size >>= 7
		if size != 0 {
			out = append(out, b|0x80)
			continue
		}
		out = append(out, b)
		break
	}
	return append(out, body...)
}

func hashOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

type call struct {
	kind string // "change" or "remove"
	path string
	size int64
	hash string
}

type recorder struct {
	mu      sync.Mutex
	calls   []call
	running map[string]bool
	overlap bool
	fail    bool          // onChange returns an error
	block   chan struct{} // onChange waits on it when set
}

func (r *recorder) enter(path string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.running[path] {
		r.overlap = true
	}
	r.running[path] = true
}

func (r *recorder) leave(path string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.running, path)
}

func (r *recorder) onChange(_ context.Context, path string) error {
	r.enter(path)
	defer r.leave(path)
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.calls = append(r.calls, call{"change", path, int64(len(b)), hashOf(b)})
	block, fail := r.block, r.fail
	r.mu.Unlock()
	if block != nil {
		<-block
	}
	if fail {
		return errors.New("refused")
	}
	return nil
}

func (r *recorder) onRemove(_ context.Context, path string) {
	r.enter(path)
	defer r.leave(path)
	r.mu.Lock()
	r.calls = append(r.calls, call{kind: "remove", path: path})
	r.mu.Unlock()
}

func (r *recorder) snapshot() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.calls)
}

type env struct {
	dir   string
	quiet time.Duration
	rec   *recorder
	w     *Watcher
}

// run starts a watcher over a fresh folder holding files (relative name ->
// content) and stops it at the end of the test, checking Run returned.
func run(t *testing.T, opts Options, files map[string][]byte) *env {
	t.Helper()
	dir := t.TempDir()
	for name, b := range files {
		write(t, filepath.Join(dir, name), b)
	}
	if opts.Quiet == 0 {
		opts.Quiet = 100 * time.Millisecond
	}
	opts.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	w, err := New(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{running: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- w.Run(ctx, rec.onChange, rec.onRemove) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-stopped:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after its context ended")
		}
		if rec.overlap {
			t.Error("callbacks for one path overlapped")
		}
	})
	return &env{dir: dir, quiet: opts.Quiet, rec: rec, w: w}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimSpace(p)))
	return len(p), nil
}

func write(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeChunks writes b into path (created or truncated) in n chunks with
// pause between them, as cp or a slow download does.
func writeChunks(t testing.TB, path string, b []byte, n int, pause time.Duration) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	step := (len(b) + n - 1) / n
	for i := 0; i < len(b); i += step {
		if _, err := f.Write(b[i:min(i+step, len(b))]); err != nil {
			t.Fatal(err)
		}
		if i+step < len(b) {
			time.Sleep(pause)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// expect waits until the calls match want (pairs of a path relative to the
// folder and the content reported, nil for a removal) and then for a few quiet periods more, so that a late
// extra call fails the test too.
func (e *env) expect(t *testing.T, want ...any) {
	t.Helper()
	var wantCalls []call
	for i := 0; i < len(want); i += 2 {
		c := call{kind: "remove", path: filepath.Join(e.dir, want[i].(string))}
		if b, ok := want[i+1].([]byte); ok {
			c = call{"change", c.path, int64(len(b)), hashOf(b)}
		}
		wantCalls = append(wantCalls, c)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(e.rec.snapshot()) < len(wantCalls) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(4 * e.quiet)
	// Paths are handled in parallel, so only the order per path counts.
	got := e.rec.snapshot()
	byPath := func(a, b call) int { return strings.Compare(a.path, b.path) }
	slices.SortStableFunc(got, byPath)
	slices.SortStableFunc(wantCalls, byPath)
	if !slices.Equal(got, wantCalls) {
		t.Fatalf("calls:\n%s\nwant:\n%s", describe(got), describe(wantCalls))
	}
}

func describe(calls []call) string {
	var b bytes.Buffer
	for _, c := range calls {
		fmt.Fprintf(&b, "  %s %s size=%d hash=%.8s\n", c.kind, filepath.Base(c.path), c.size, c.hash)
	}
	if len(calls) == 0 {
		b.WriteString("  (none)\n")
	}
	return b.String()
}

func TestChunkedWrite(t *testing.T) {
	for _, tc := range []struct {
		name  string
		pause time.Duration
	}{
		{"pauses shorter than quiet", 20 * time.Millisecond},
		{"pauses longer than quiet", 250 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := run(t, Options{}, map[string][]byte{"greeter.wasm": module(100<<10, 'a')})
			v2 := module(300<<10, 'b')
			writeChunks(t, filepath.Join(e.dir, "greeter.wasm"), v2, 6, tc.pause)
			e.expect(t, "greeter.wasm", v2)
		})
	}
}

func TestNewFileChunked(t *testing.T) {
	t.Parallel()
	e := run(t, Options{}, nil)
	v := module(200<<10, 'a')
	writeChunks(t, filepath.Join(e.dir, "orders.wasm"), v, 4, 150*time.Millisecond)
	e.expect(t, "orders.wasm", v)
}

func TestRenameOver(t *testing.T) {
	t.Run("vim", func(t *testing.T) {
		// vim (backupcopy=no): move the original to a backup name, write
		// the new file, delete the backup.
		t.Parallel()
		e := run(t, Options{}, map[string][]byte{"greeter.wasm": module(10<<10, 'a')})
		p := filepath.Join(e.dir, "greeter.wasm")
		if err := os.Rename(p, p+"~"); err != nil {
			t.Fatal(err)
		}
		v2 := module(20<<10, 'b')
		writeChunks(t, p, v2, 3, 5*time.Millisecond)
		if err := os.Remove(p + "~"); err != nil {
			t.Fatal(err)
		}
		e.expect(t, "greeter.wasm", v2)
	})
	t.Run("atomic save", func(t *testing.T) {
		// VS Code and most tools: write a hidden temp file, rename it over.
		t.Parallel()
		e := run(t, Options{}, map[string][]byte{"greeter.wasm": module(10<<10, 'a')})
		p := filepath.Join(e.dir, "greeter.wasm")
		tmp := filepath.Join(e.dir, ".greeter.wasm.swp")
		v2 := module(20<<10, 'b')
		writeChunks(t, tmp, v2, 3, 5*time.Millisecond)
		if err := os.Rename(tmp, p); err != nil {
			t.Fatal(err)
		}
		e.expect(t, "greeter.wasm", v2)
	})
}

func TestTempThenMove(t *testing.T) {
	t.Parallel()
	e := run(t, Options{}, map[string][]byte{"greeter.wasm": module(10<<10, 'a')})
	p := filepath.Join(e.dir, "greeter.wasm")
	v2 := module(500<<10, 'b')
	// The copy pauses longer than the quiet period: its temp name is
	// ignored, so only the mv counts.
	writeChunks(t, p+".tmp", v2, 4, 150*time.Millisecond)
	if err := os.Rename(p+".tmp", p); err != nil {
		t.Fatal(err)
	}
	e.expect(t, "greeter.wasm", v2)
}

func TestGoBuildLike(t *testing.T) {
	// go build -o into the folder truncates the output and writes it (when
	// it cannot rename from its work directory), in the linker's chunks.
	t.Parallel()
	e := run(t, Options{}, map[string][]byte{"svc.wasm": module(1<<20, 'a')})
	v2 := module(2<<20, 'b')
	writeChunks(t, filepath.Join(e.dir, "svc.wasm"), v2, 32, 2*time.Millisecond)
	e.expect(t, "svc.wasm", v2)
}

func TestSameContent(t *testing.T) {
	t.Parallel()
	e := run(t, Options{}, map[string][]byte{"svc.wasm": module(10<<10, 'a')})
	p := filepath.Join(e.dir, "svc.wasm")
	v2 := module(10<<10, 'b')
	write(t, p, v2)
	e.expect(t, "svc.wasm", v2)
	// Rewritten in place, then renamed over, then touched: content is the
	// same, so nothing is reported.
	write(t, p, v2)
	time.Sleep(3 * e.quiet)
	write(t, p+".tmp", v2)
	if err := os.Rename(p+".tmp", p); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * e.quiet)
	now := time.Now()
	if err := os.Chtimes(p, now, now); err != nil {
		t.Fatal(err)
	}
	e.expect(t, "svc.wasm", v2)
}

func TestSameContentAfterRefusalIsReported(t *testing.T) {
	// A callback that fails (the host refused the file) does not remember
	// the content, so writing it again retries.
	t.Parallel()
	e := run(t, Options{}, nil)
	e.rec.fail = true
	p := filepath.Join(e.dir, "svc.wasm")
	v := module(10<<10, 'a')
	write(t, p, v)
	e.expect(t, "svc.wasm", v)
	write(t, p, v)
	e.expect(t, "svc.wasm", v, "svc.wasm", v)
}

func TestBurst(t *testing.T) {
	// 50 complete versions back to back: debounce alone must make it one
	// call, with the last content. The quiet period is wider than usual
	// because the machine running tests may stall the writer.
	t.Parallel()
	e := run(t, Options{Quiet: 300 * time.Millisecond}, map[string][]byte{"svc.wasm": module(10<<10, 'a')})
	p := filepath.Join(e.dir, "svc.wasm")
	var last []byte
	for i := range 50 {
		last = module(16<<10+i, byte('A'+i%26))
		write(t, p, last)
	}
	e.expect(t, "svc.wasm", last)
}

func TestRemove(t *testing.T) {
	t.Parallel()
	e := run(t, Options{}, map[string][]byte{"svc.wasm": module(10<<10, 'a'), "shop/svc.wasm": module(10<<10, 'b')})
	if err := os.Remove(filepath.Join(e.dir, "svc.wasm")); err != nil {
		t.Fatal(err)
	}
	e.expect(t, "svc.wasm", nil)
	// A tenant folder moved away sends no events for its files.
	if err := os.Rename(filepath.Join(e.dir, "shop"), filepath.Join(t.TempDir(), "shop")); err != nil {
		t.Fatal(err)
	}
	e.expect(t, "svc.wasm", nil, "shop/svc.wasm", nil)
}

func TestRemoveThenRecreate(t *testing.T) {
	// Deleted and written again within the quiet period: a change, not a
	// removal.
	t.Parallel()
	e := run(t, Options{}, map[string][]byte{"svc.wasm": module(10<<10, 'a')})
	p := filepath.Join(e.dir, "svc.wasm")
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	v2 := module(10<<10, 'b')
	write(t, p, v2)
	e.expect(t, "svc.wasm", v2)
}

func TestNewTenantFolder(t *testing.T) {
	t.Run("created then written", func(t *testing.T) {
		t.Parallel()
		e := run(t, Options{}, nil)
		v := module(10<<10, 'a')
		write(t, filepath.Join(e.dir, "shop", "orders.wasm"), v)
		e.expect(t, "shop/orders.wasm", v)
		// And later changes in it are seen.
		v2 := module(10<<10, 'b')
		writeChunks(t, filepath.Join(e.dir, "shop", "orders.wasm"), v2, 3, 150*time.Millisecond)
		e.expect(t, "shop/orders.wasm", v, "shop/orders.wasm", v2)
	})
	t.Run("moved in with files", func(t *testing.T) {
		t.Parallel()
		e := run(t, Options{}, nil)
		src := filepath.Join(t.TempDir(), "shop")
		v := module(10<<10, 'a')
		write(t, filepath.Join(src, "orders.wasm"), v)
		write(t, filepath.Join(src, "notes.txt"), []byte("x"))
		if err := os.Rename(src, filepath.Join(e.dir, "shop")); err != nil {
			t.Fatal(err)
		}
		e.expect(t, "shop/orders.wasm", v)
	})
	t.Run("folder filter", func(t *testing.T) {
		t.Parallel()
		e := run(t, Options{Folder: func(name string) bool { return name != "Bad" }}, nil)
		write(t, filepath.Join(e.dir, "Bad", "orders.wasm"), module(10<<10, 'a'))
		write(t, filepath.Join(e.dir, ".hidden", "orders.wasm"), module(10<<10, 'a'))
		e.expect(t)
	})
}

func TestIgnored(t *testing.T) {
	t.Parallel()
	e := run(t, Options{}, nil)
	v := module(10<<10, 'a')
	for _, name := range []string{".svc.wasm", "svc.wasm~", "svc.wasm.tmp", ".svc.wasm.swp", "notes.txt", "svc.wat",
		"shop/.svc.wasm", "shop/deeper/svc.wasm"} {
		write(t, filepath.Join(e.dir, name), v)
	}
	if err := os.Remove(filepath.Join(e.dir, "svc.wasm~")); err != nil {
		t.Fatal(err)
	}
	e.expect(t)
}

func TestTruncatedFileIsReportedAfterPartialWait(t *testing.T) {
	// A file that stays cut short is reported once PartialWait passes, so
	// the host can refuse it and say why.
	t.Parallel()
	e := run(t, Options{PartialWait: 400 * time.Millisecond}, map[string][]byte{"svc.wasm": module(10<<10, 'a')})
	cut := module(20<<10, 'b')[:15<<10]
	start := time.Now()
	write(t, filepath.Join(e.dir, "svc.wasm"), cut)
	e.expect(t, "svc.wasm", cut)
	if since := time.Since(start); since < 400*time.Millisecond {
		t.Fatalf("reported after %s, before PartialWait", since)
	}
}

func TestSerialPerPath(t *testing.T) {
	t.Parallel()
	e := run(t, Options{}, nil)
	release := make(chan struct{})
	e.rec.mu.Lock()
	e.rec.block = release
	e.rec.mu.Unlock()
	p := filepath.Join(e.dir, "svc.wasm")
	v1, v2 := module(10<<10, 'a'), module(10<<10, 'b')
	write(t, p, v1)
	for len(e.rec.snapshot()) == 0 {
		time.Sleep(5 * time.Millisecond)
	}
	// v2 settles while v1's callback still runs; another path is not held up.
	write(t, p, v2)
	other := module(10<<10, 'c')
	write(t, filepath.Join(e.dir, "other.wasm"), other)
	for len(e.rec.snapshot()) < 2 {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(3 * e.quiet)
	if got := e.rec.snapshot(); len(got) != 2 || filepath.Base(got[1].path) != "other.wasm" {
		t.Fatalf("calls while svc.wasm's callback runs:\n%s", describe(got))
	}
	e.rec.mu.Lock()
	e.rec.block = nil
	e.rec.mu.Unlock()
	close(release)
	e.expect(t, "svc.wasm", v1, "other.wasm", other, "svc.wasm", v2)
}

func TestOverflowRescans(t *testing.T) {
	// Files whose events were lost are found by the rescan; known content
	// is not reported again.
	t.Parallel()
	v := module(10<<10, 'a')
	e := run(t, Options{}, map[string][]byte{"svc.wasm": v, "shop/orders.wasm": v})
	e.w.fsw.Errors <- fsnotify.ErrEventOverflow
	e.expect(t, "shop/orders.wasm", v, "svc.wasm", v)
}

func TestShutdownLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	dir := t.TempDir()
	w, err := New(dir, Options{Quiet: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	entered := make(chan struct{}, 10)
	release := make(chan struct{})
	stopped := make(chan error, 1)
	go func() {
		stopped <- w.Run(ctx, func(context.Context, string) error {
			entered <- struct{}{}
			<-release
			return nil
		}, func(context.Context, string) {})
	}()
	// One callback in progress, one timer pending, when ctx ends.
	write(t, filepath.Join(dir, "a.wasm"), module(1<<10, 'a'))
	<-entered
	write(t, filepath.Join(dir, "b.wasm"), module(1<<10, 'b'))
	cancel()
	select {
	case <-stopped:
		t.Fatal("Run returned while a callback was running")
	case <-time.After(100 * time.Millisecond):
	}
	close(release)
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return")
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := w.Run(context.Background(), nil, nil); err == nil {
		t.Fatal("second Run did not fail")
	}
}
