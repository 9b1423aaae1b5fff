package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/broker/amqp"
	"github.com/nuropb/nuropb/broker/memory"
	"github.com/nuropb/nuropb/client"
	"github.com/nuropb/nuropb/host"
)

// The program re-executes itself as a host in a child process: for RabbitMQ
// rows (caller and host in separate processes, as deployed) and for start-up
// and memory rows (a fresh process, so nothing an earlier row warmed or
// allocated is counted). The child's config travels in childEnv as JSON; it
// reports on stdout, one JSON object per line: once when serving, then once
// per "stats" line read on stdin. It shuts down when stdin closes.
const childEnv = "NUROPB_BENCH_CHILD"

type childConfig struct {
	Broker     string // "memory" or an AMQP URL
	ModulesDir string
	CacheDir   string
	Prefetch   int
	Limits     host.Limits // the host's Defaults
	Probe      string      // "tenant/service" whose echo is called once after Start; "" for none
	CPUProfile string      // write the host process's CPU profile here; "" for none
}

type childReport struct {
	StartMS   float64 `json:",omitempty"` // host.New to Start returned (every module loaded and served)
	ProbeMS   float64 `json:",omitempty"` // the probe call after Start
	Services  int     `json:",omitempty"`
	Refused   int     `json:",omitempty"`
	Instances int     `json:",omitempty"`
	RSSBefore int64   `json:",omitempty"` // bytes, before the host was built (after a GC)
	RSS       int64   `json:",omitempty"` // bytes, now (after a GC)
	Calls     uint64  `json:",omitempty"`
	Err       string  `json:",omitempty"`
}

func childMain() int {
	out := json.NewEncoder(os.Stdout)
	if err := childRun(out); err != nil {
		_ = out.Encode(childReport{Err: err.Error()})
		return 1
	}
	return 0
}

func childRun(out *json.Encoder) error {
	var cfg childConfig
	if err := json.Unmarshal([]byte(os.Getenv(childEnv)), &cfg); err != nil {
		return fmt.Errorf("child config: %w", err)
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var rep childReport
	rep.RSSBefore = settledRSS()
	t0 := time.Now()
	var br broker.Broker
	var err error
	if cfg.Broker == "memory" {
		br, err = memory.New(memory.Config{})
	} else {
		br, err = amqp.New(ctx, amqp.Config{URL: cfg.Broker, Logger: logger})
	}
	if err != nil {
		return err
	}
	defer br.Close()
	h, err := host.New(host.Config{ModulesDir: cfg.ModulesDir, CacheDir: cfg.CacheDir, Logger: logger,
		Prefetch: cfg.Prefetch, Defaults: cfg.Limits}, br)
	if err != nil {
		return err
	}
	if err := h.Start(ctx); err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		_ = h.Shutdown(sctx)
	}()
	rep.StartMS = ms(time.Since(t0))
	if cfg.Probe != "" {
		tenant, svc, _ := strings.Cut(cfg.Probe, "/")
		t1 := time.Now()
		if _, err := client.New(br, client.WithTenant(tenant)).Call(ctx, echoEnvelope(svc)); err != nil {
			return fmt.Errorf("probe %s.echo: %w", cfg.Probe, err)
		}
		rep.ProbeMS = ms(time.Since(t1))
	}
	infos := h.Services()
	rep.Services, rep.Refused = len(infos), len(h.Refusals())
	for _, s := range infos {
		rep.Instances += s.Instances
	}
	if rep.Refused > 0 {
		return fmt.Errorf("%d modules refused, first: %s", rep.Refused, h.Refusals()[0].Error())
	}
	rep.RSS = settledRSS()
	if err := out.Encode(rep); err != nil {
		return err
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() != "stats" {
			return fmt.Errorf("child: unknown command %q", in.Text())
		}
		if err := out.Encode(childReport{Calls: calls(h), RSS: rss()}); err != nil {
			return err
		}
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// settledRSS is the resident set after garbage is collected and returned
// to the OS, so that it counts what is live, not what awaits a GC.
func settledRSS() int64 {
	runtime.GC()
	debug.FreeOSMemory()
	return rss()
}

// rss is this process's resident set size in bytes (VmRSS).
func rss() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// child is a host process started by startChild.
type child struct {
	cmd    *exec.Cmd
	stdin  interface{ Close() error }
	stdinW *bufio.Writer
	out    *json.Decoder
	tmp    string // modules folder to remove, when startChild made it
	ready  childReport
}

// startChild starts a host process and waits until it serves. With files,
// it writes them to a temporary modules folder (removed by stop); without,
// cfg.ModulesDir is served. cfg.CacheDir defaults to the shared one.
func startChild(ctx context.Context, b *bench, cfg childConfig, files map[string][]byte) (*child, error) {
	c := &child{}
	if files != nil {
		dir, err := os.MkdirTemp("", "nuropb-bench-modules-")
		if err != nil {
			return nil, err
		}
		c.tmp, cfg.ModulesDir = dir, dir
		if err := writeModules(dir, files); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	if cfg.CacheDir == "" {
		cfg.CacheDir = filepath.Join(b.opts.cacheDir, "wazero-cache")
	}
	if b.opts.cpuprofile != "" {
		b.children++
		cfg.CPUProfile = fmt.Sprintf("%s.host-%d", b.opts.cpuprofile, b.children)
		b.progress("host process %d: CPU profile in %s", b.children, cfg.CPUProfile)
	}
	conf, err := json.Marshal(cfg)
	if err != nil {
		return nil, err
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	c.cmd = exec.Command(exe)
	c.cmd.Env = append(os.Environ(), childEnv+"="+string(conf))
	c.cmd.Stderr = b.stderr
	stdin, err := c.cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	c.stdin, c.stdinW, c.out = stdin, bufio.NewWriter(stdin), json.NewDecoder(stdout)
	if err := c.cmd.Start(); err != nil {
		c.cleanup()
		return nil, fmt.Errorf("starting the host process: %w", err)
	}
	rep, err := c.read(ctx, 10*time.Minute)
	if err != nil {
		c.stop()
		return nil, fmt.Errorf("host process: %w", err)
	}
	c.ready = rep
	return c, nil
}

// read waits for the child's next report.
func (c *child) read(ctx context.Context, within time.Duration) (childReport, error) {
	type result struct {
		rep childReport
		err error
	}
	done := make(chan result, 1)
	go func() {
		var r childReport
		err := c.out.Decode(&r)
		done <- result{r, err}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return r.rep, fmt.Errorf("reading its report: %w", r.err)
		}
		if r.rep.Err != "" {
			return r.rep, errors.New(r.rep.Err)
		}
		return r.rep, nil
	case <-ctx.Done():
		return childReport{}, ctx.Err()
	case <-time.After(within):
		return childReport{}, fmt.Errorf("no report within %s", within)
	}
}

// stats asks the child for its counters.
func (c *child) stats(ctx context.Context) (childReport, error) {
	if _, err := c.stdinW.WriteString("stats\n"); err != nil {
		return childReport{}, err
	}
	if err := c.stdinW.Flush(); err != nil {
		return childReport{}, err
	}
	return c.read(ctx, 30*time.Second)
}

// stop closes the child's stdin (it shuts its host down and exits) and
// kills it if it has not exited within 30 s.
func (c *child) stop() {
	_ = c.stdin.Close()
	done := make(chan struct{})
	go func() { _ = c.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = c.cmd.Process.Kill()
		<-done
	}
	c.cleanup()
}

func (c *child) cleanup() {
	if c.tmp != "" {
		_ = os.RemoveAll(c.tmp)
	}
}
