package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nuropb/nuropb/broker/amqp/amqptest"
)

func main() {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "nuropb-bench:", err)
		os.Exit(1)
	}
}

// section is one group of rows, selectable with -only.
type section struct {
	id    string
	title string
	run   func(ctx context.Context, b *bench) error
	amqp  bool // needs RabbitMQ
	extra bool // only run when named in -only
}

var sections = []section{
	{"rpc", "RPC round trips, embedded broker (in-process client.Call)", rpcEmbedded, false, false},
	{"rpc-amqp", "RPC round trips, RabbitMQ (caller and host in separate processes)", rpcAMQP, true, false},
	{"oneway", "Commands and events handled", oneway, false, false},
	{"overhead", "Per-call host overhead (1 in flight, in-process)", overhead, false, false},
	{"reload", "Hot reload (embedded broker, 8 callers in flight)", reload, false, false},
	{"coldstart", "Cold start: tenants of one Rust module, embedded broker", coldStart, false, false},
	{"density", "Density (embedded broker, idle)", density, false, false},
	// 100 cold compiles take a minute on a loaded 2-core machine: on request.
	{"compile", "Cold start with distinct modules (one compile each)", compileStart, false, true},
}

// options are the parsed flags, with the sizes -quick shrinks.
type options struct {
	out        string
	only       map[string]bool
	langs      []string
	quick      bool
	runs       int
	dur        time.Duration
	cpuprofile string
	amqpURL    string
	cacheDir   string

	levels      []int // requests in flight
	messages    int   // commands and events per run
	reloads     map[string]int
	coldModules int
	idleModules int
	perInstance map[string]int // extra instances for RSS per instance
}

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("nuropb-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, "Usage: nuropb-bench [flags]\n\nRuns nuropb's benchmarks and prints one table (see doc.go).\n\nExample:\n  nuropb-bench -o BENCHMARKS.md\n  nuropb-bench -quick -only rpc,reload -langs rust\n\nFlags:\n")
		fs.PrintDefaults()
	}
	o := &options{}
	ids := make([]string, len(sections))
	for i, s := range sections {
		ids[i] = s.id
	}
	only := fs.String("only", "", "comma-separated rows to run: "+strings.Join(ids, ",")+" (compile runs only when named)")
	langs := fs.String("langs", "go,rust,python", "guest languages for the per-language rows")
	levels := fs.String("levels", "1,8,64", "requests in flight for the RPC rows")
	fs.StringVar(&o.out, "o", "", "also write the report to this Markdown file (an existing \"## Analysis\" section is kept)")
	fs.BoolVar(&o.quick, "quick", false, "smoke test: one short run of each row, small counts")
	fs.IntVar(&o.runs, "runs", 3, "repetitions of each row (median and min-max reported)")
	fs.DurationVar(&o.dur, "dur", 2*time.Second, "measuring time of one timed row run")
	fs.StringVar(&o.cpuprofile, "cpuprofile", "", "write a CPU profile of this process to this file, and of each host process to <file>.host-<n>")
	fs.StringVar(&o.amqpURL, "amqp", "", "RabbitMQ base URL, its vhost replaced by a fresh one (default $"+amqptest.BaseURLEnv+" or "+amqptest.BaseURL+")")
	fs.StringVar(&o.cacheDir, "cache", "", "where built guests and wazero's compilation cache live (default <user cache dir>/nuropb)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q (see -h)", fs.Args())
	}
	if *only != "" {
		o.only = map[string]bool{}
		for _, id := range strings.Split(*only, ",") {
			id = strings.TrimSpace(id)
			if !slices.Contains(ids, id) {
				return nil, fmt.Errorf("-only: unknown row %q (want some of %s)", id, strings.Join(ids, ","))
			}
			o.only[id] = true
		}
	}
	for _, l := range strings.Split(*langs, ",") {
		l = strings.TrimSpace(l)
		if !slices.Contains(allLangs, l) {
			return nil, fmt.Errorf("-langs: unknown language %q (want some of %s)", l, strings.Join(allLangs, ","))
		}
		o.langs = append(o.langs, l)
	}
	for _, f := range strings.Split(*levels, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("-levels: %q is not a positive count", f)
		}
		o.levels = append(o.levels, n)
	}
	if o.runs < 1 {
		return nil, fmt.Errorf("-runs: %d, want at least 1", o.runs)
	}
	if o.amqpURL == "" {
		o.amqpURL = defaultAMQP()
	}
	if o.cacheDir == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			dir = os.TempDir()
		}
		o.cacheDir = filepath.Join(dir, "nuropb")
	}
	o.messages = 20_000
	o.reloads = map[string]int{"go": 2, "rust": 5, "python": 2}
	o.coldModules = 100
	o.idleModules = 1000
	o.perInstance = map[string]int{"go": 16, "rust": 16, "python": 4}
	if o.quick {
		o.runs = 1
		o.dur = 200 * time.Millisecond
		o.messages = 500
		o.reloads = map[string]int{"go": 1, "rust": 2, "python": 1}
		o.coldModules = 5
		o.idleModules = 20
		o.perInstance = map[string]int{"go": 2, "rust": 2, "python": 1}
	}
	return o, nil
}

func (o *options) selected(id string) bool {
	if o.only == nil {
		for _, s := range sections {
			if s.id == id {
				return !s.extra
			}
		}
	}
	return o.only[id]
}

func (o *options) hasLang(l string) bool { return slices.Contains(o.langs, l) }

// bench is one run of the program: its options, the guests it built and
// the rows measured so far.
type bench struct {
	opts     *options
	root     string // the repository
	log      *slog.Logger
	stderr   io.Writer
	guests   map[string][]byte // conformance guest by language, built on first use
	rows     []*row
	children int // host processes started, to name their CPU profiles
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	// Progress lines, log lines and host processes' stderr all go to stderr,
	// from several goroutines.
	stderr = &lockedWriter{w: stderr}
	b := &bench{opts: o, root: root, stderr: stderr, guests: map[string][]byte{},
		log: slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	m := describeMachine(ctx, root)
	started := time.Now()

	if o.cpuprofile != "" {
		f, err := os.Create(o.cpuprofile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	amqpErr := amqpReachable(o.amqpURL)
	for _, s := range sections {
		if !o.selected(s.id) {
			continue
		}
		if s.amqp && amqpErr != nil {
			if isCI() {
				return fmt.Errorf("%s: RabbitMQ is required under CI=true: %w", s.id, amqpErr)
			}
			b.skip(s.id, "RabbitMQ not reachable: "+amqpErr.Error())
			continue
		}
		fmt.Fprintf(stderr, "== %s\n", s.title)
		t0 := time.Now()
		if err := s.run(ctx, b); err != nil {
			return fmt.Errorf("%s: %w", s.id, err)
		}
		fmt.Fprintf(stderr, "   (%s in %s)\n", s.id, time.Since(t0).Round(time.Second))
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	m.finish(started)
	report := renderReport(m, args, b.rows)
	if _, err := io.WriteString(stdout, report); err != nil {
		return err
	}
	if o.out != "" {
		return writeReport(o.out, report)
	}
	return nil
}

// repoRoot finds the module root from the working directory, so the program
// works from the repository root (make bench) and from its own folder (go test).
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && strings.Contains(string(b), "module github.com/nuropb/nuropb\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run nuropb-bench inside the nuropb repository: it builds the conformance guests from source")
		}
		dir = parent
	}
}

// writeReport replaces the file's content above its "## Analysis" heading
// (if any) with report.
func writeReport(path, report string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if i := strings.Index(string(old), "\n"+analysisHeading); i >= 0 {
		report = strings.TrimRight(report, "\n") + "\n\n" + string(old[i+1:])
	}
	return os.WriteFile(path, []byte(report), 0o644)
}

const analysisHeading = "## Analysis"

// progress prints one line of progress to stderr.
func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(b.stderr, "   "+format+"\n", args...)
}

// isCI reports a CI run, where RabbitMQ rows must run rather than be skipped.
func isCI() bool { return os.Getenv("CI") == "true" }

// defaultAMQP is the broker the RabbitMQ rows use unless -amqp says
// otherwise: the one broker/amqp's tests use.
func defaultAMQP() string {
	if u := os.Getenv(amqptest.BaseURLEnv); u != "" {
		return u
	}
	return amqptest.BaseURL
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
