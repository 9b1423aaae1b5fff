package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestGracefulShutdown runs the real binary, puts slow calls in flight over
// HTTP and WebSocket, sends SIGTERM, and checks that every call is answered
// and the process exits 0.
func TestGracefulShutdown(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and a guest")
	}
	dir := modulesDir(t, map[string]string{"conformance.wasm": "guest-sdk/go/internal/conformance"})
	bin := filepath.Join(t.TempDir(), "nuropb-host")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	cfg := filepath.Join(t.TempDir(), "host.toml")
	toml := fmt.Sprintf(`broker = "memory"
modules_dir = %q
cache_dir = %q
watch = false
drain_timeout = "20s"
[http]
listen = "127.0.0.1:0"
[log]
format = "json"
`, dir, filepath.Join(cacheDir(t), "wazero-cache"))
	if err := os.WriteFile(cfg, []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "run", "--config", cfg)
	logs := &logWriter{addr: make(chan string, 1)}
	cmd.Stderr = logs // not a pipe: Wait then returns only once every line is in
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	addr, dumpLogs := logs.addr, logs.String
	var base string
	select {
	case a := <-addr:
		base = "http://" + a
	case <-time.After(60 * time.Second):
		t.Fatalf("host did not start:\n%s", dumpLogs())
	}
	for deadline := time.Now().Add(30 * time.Second); ; {
		resp, err := http.Get(base + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready:\n%s", dumpLogs())
		}
		time.Sleep(50 * time.Millisecond)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+"/v1/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	if err := ws.Write(ctx, websocket.MessageText,
		[]byte(`{"type":"request","id":"ws-1","service":"conformance","method":"sleep_ms","params":{"ms":1200}}`)); err != nil {
		t.Fatal(err)
	}

	const calls = 2
	results := make(chan string, calls)
	for i := range calls {
		go func() {
			resp, err := http.Post(base+"/v1/call/conformance/sleep_ms", "application/json", strings.NewReader(`{"ms":1200}`))
			if err != nil {
				results <- fmt.Sprintf("call %d: %v", i, err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			results <- fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b)))
		}()
	}
	// SIGTERM once the calls run in the guest: a request still on its way
	// when the listener closes was never in flight. At most one call per
	// core of the tenant runs at once (TenantMaxRunning); the others wait
	// in the host for a slot, in flight all the same.
	running := min(calls+1, runtime.NumCPU())
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var list struct {
			Services []struct{ Busy int } `json:"services"`
		}
		if resp, err := http.Get(base + "/v1/services"); err == nil {
			_ = json.NewDecoder(resp.Body).Decode(&list)
			resp.Body.Close()
		}
		if len(list.Services) == 1 && list.Services[0].Busy >= running {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("calls never all in flight: %+v", list)
		}
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	for range calls {
		if r := <-results; !strings.HasPrefix(r, "200 ") {
			t.Errorf("in-flight HTTP call not answered: %s", r)
		}
	}
	_, frame, err := ws.Read(ctx)
	if err != nil || !strings.Contains(string(frame), `"type":"response"`) || !strings.Contains(string(frame), `"ws-1"`) {
		t.Errorf("in-flight WebSocket call not answered: %s %v", frame, err)
	}
	if _, _, err := ws.Read(ctx); websocket.CloseStatus(err) != websocket.StatusGoingAway {
		t.Errorf("WebSocket not closed with 1001 on shutdown: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, dumpLogs())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("did not exit after SIGTERM:\n%s", dumpLogs())
	}
	if l := dumpLogs(); !strings.Contains(l, "draining in-flight calls") || !strings.Contains(l, `"msg":"stopped"`) {
		t.Errorf("shutdown not logged:\n%s", l)
	}
}

// logWriter keeps the host's JSON log and reports the gateway's listening
// address (the config asks for port 0). slog writes one line per Write.
type logWriter struct {
	mu   sync.Mutex
	buf  strings.Builder
	addr chan string
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	sc := bufio.NewScanner(strings.NewReader(string(p)))
	for sc.Scan() {
		var line struct{ Msg, Addr string }
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "http gateway listening" {
			w.addr <- line.Addr
		}
	}
	return len(p), nil
}

func (w *logWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
