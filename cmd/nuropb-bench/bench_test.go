package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary serve as the host process the program
// re-executes for RabbitMQ, start-up and memory rows.
func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	os.Exit(m.Run())
}

// The smoke tests run the program in -quick mode on cheap rows so that it
// keeps working; they check that rows were measured, never the figures.

func TestQuickOverhead(t *testing.T) {
	requireRust(t)
	out := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	// A hand-written analysis below the table must survive a re-run.
	if err := os.WriteFile(out, []byte("old table\n\n## Analysis\nkept\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	report := runQuick(t, "-only", "overhead", "-langs", "rust", "-o", out)
	for _, want := range []string{"Rust: bare wazero call", "Rust: host overhead, CPU per call", "Load average"} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	written, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(written), "# nuropb benchmarks") || !strings.HasSuffix(string(written), "## Analysis\nkept\n") {
		t.Errorf("written file does not keep the analysis section:\n%s", written)
	}
}

func TestQuickRabbitMQ(t *testing.T) {
	requireRust(t)
	if err := amqpReachable(defaultAMQP()); err != nil {
		if isCI() {
			t.Fatalf("RabbitMQ is required under CI=true: %v", err)
		}
		t.Skipf("RabbitMQ not reachable: %v", err)
	}
	report := runQuick(t, "-only", "rpc-amqp", "-langs", "rust")
	if !strings.Contains(report, "nuropb / raw, 64 in flight") || strings.Contains(report, "skipped") {
		t.Errorf("RabbitMQ rows missing or skipped:\n%s", report)
	}
}

func TestOptions(t *testing.T) {
	for _, bad := range [][]string{{"-only", "nope"}, {"-langs", "cobol"}, {"-runs", "0"}, {"extra"}} {
		if _, err := parseOptions(bad, &bytes.Buffer{}); err == nil {
			t.Errorf("parseOptions(%q) accepted", bad)
		}
	}
	o, err := parseOptions([]string{"-quick", "-only", "rpc,reload"}, &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if o.runs != 1 || !o.selected("rpc") || !o.selected("reload") || o.selected("density") {
		t.Errorf("options = %+v", o)
	}
}

func runQuick(t *testing.T, args ...string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds guests and runs benchmarks")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := run(ctx, append([]string{"-quick"}, args...), &stdout, &stderr); err != nil {
		t.Fatalf("nuropb-bench %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

func requireRust(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("/usr/bin/rustc"); err != nil {
		if isCI() {
			t.Fatalf("the Rust guest toolchain is required under CI=true (make setup): %v", err)
		}
		t.Skipf("no Rust guest toolchain (make setup): %v", err)
	}
}
