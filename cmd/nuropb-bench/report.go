package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nuropb/nuropb/internal/buildinfo"
)

// row is one line of the table: a figure measured once per run.
type row struct {
	section string
	name    string
	unit    string    // how vals print: rt/s, /s, µs, ms, MiB, KiB, %, x
	vals    []float64 // one per run
	p50     []float64 // µs, one per run; empty when not a latency row
	p99     []float64
	cpu     []float64 // CPU µs per operation, one per run (see cpuMeter for whose)
	target  string
	pass    func(median float64) bool // nil: no target
	note    string
	skipped string
}

// newRow adds a row to the report and returns it for filling in.
func (b *bench) newRow(section, name, unit string) *row {
	r := &row{section: section, name: name, unit: unit}
	b.rows = append(b.rows, r)
	return r
}

func (b *bench) skip(section, why string) {
	b.rows = append(b.rows, &row{section: section, name: "(all rows)", skipped: why})
	fmt.Fprintf(b.stderr, "== %s: skipped: %s\n", section, why)
}

func (r *row) add(v float64) { r.vals = append(r.vals, v) }

func (r *row) addLatency(p50, p99 time.Duration) {
	r.p50 = append(r.p50, float64(p50)/float64(time.Microsecond))
	r.p99 = append(r.p99, float64(p99)/float64(time.Microsecond))
}

func (r *row) addCPU(us float64) { r.cpu = append(r.cpu, us) }

func (r *row) withTarget(text string, pass func(float64) bool) *row {
	r.target, r.pass = text, pass
	return r
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// percentile of sorted durations, nearest rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// format prints v in unit with a precision suited to its size.
func format(v float64, unit string) string {
	if math.IsNaN(v) {
		return "–"
	}
	var s string
	switch {
	case unit == "%" || math.Abs(v) >= 100:
		s = thousands(int64(math.Round(v)))
	case math.Abs(v) >= 10:
		s = strconv.FormatFloat(v, 'f', 1, 64)
	default:
		s = strconv.FormatFloat(v, 'f', 2, 64)
	}
	switch unit {
	case "%", "x":
		return s + unit
	case "":
		return s
	}
	return s + " " + unit
}

func thousands(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

func (r *row) cells() (med, rng, lat, cpu, result string) {
	if r.skipped != "" {
		return "skipped", "", "", "", r.skipped
	}
	if len(r.cpu) > 0 {
		cpu = format(median(r.cpu), "")
	}
	m := median(r.vals)
	med = format(m, r.unit)
	if len(r.vals) > 1 {
		rng = format(slices.Min(r.vals), "") + " – " + format(slices.Max(r.vals), "")
	}
	if len(r.p50) > 0 {
		lat = format(median(r.p50), "µs") + " / " + format(median(r.p99), "µs")
	}
	if r.pass != nil && len(r.vals) > 0 {
		if r.pass(m) {
			result = "pass"
		} else {
			result = "**miss**"
		}
	}
	return med, rng, lat, cpu, result
}

// machine is what the figures were measured on.
type machine struct {
	cpus             int
	cpuModel         string
	memory           string
	loadStart        string
	loadEnd          string
	goVersion        string
	wazero           string
	commit           string
	started          time.Time
	took             time.Duration
	rabbitmqVersion  string
	gomaxprocs       int
	kernel           string
	dirtyWorkingTree bool
}

func describeMachine(ctx context.Context, root string) *machine {
	m := &machine{cpus: runtime.NumCPU(), gomaxprocs: runtime.GOMAXPROCS(0), goVersion: runtime.Version(),
		started: time.Now(), loadStart: loadAvg()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.cpuModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				m.memory = fmt.Sprintf("%.1f GiB", kb/(1<<20))
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.kernel = strings.TrimSpace(string(b))
	}
	m.wazero = buildinfo.WazeroVersion()
	git := func(args ...string) string {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = root
		out, _ := cmd.Output()
		return strings.TrimSpace(string(out))
	}
	m.commit = git("rev-parse", "--short=12", "HEAD")
	m.dirtyWorkingTree = git("status", "--porcelain", "--untracked-files=no") != ""
	if out, err := exec.CommandContext(ctx, "rabbitmqctl", "-q", "version").Output(); err == nil {
		m.rabbitmqVersion = strings.TrimSpace(string(out))
	}
	return m
}

func (m *machine) finish(started time.Time) {
	m.took = time.Since(started)
	m.loadEnd = loadAvg()
}

// loadAvg is the 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func renderReport(m *machine, args []string, rows []*row) string {
	var b strings.Builder
	b.WriteString("# nuropb benchmarks\n\n")
	b.WriteString("Generated by `cmd/nuropb-bench` (`make bench`); re-run it to replace everything above the Analysis section.\n\n")
	fmt.Fprintf(&b, "- Command: `go run ./cmd/nuropb-bench %s`\n", strings.Join(args, " "))
	fmt.Fprintf(&b, "- Date: %s; took %s\n", m.started.UTC().Format("2006-01-02 15:04 MST"), m.took.Round(time.Second))
	fmt.Fprintf(&b, "- Machine: %d CPUs (GOMAXPROCS %d), %s, %s, Linux %s\n", m.cpus, m.gomaxprocs, m.cpuModel, m.memory, m.kernel)
	fmt.Fprintf(&b, "- Load average (1/5/15 min): %s at start, %s at end\n", m.loadStart, m.loadEnd)
	dirty := ""
	if m.dirtyWorkingTree {
		dirty = " (working tree had uncommitted changes)"
	}
	fmt.Fprintf(&b, "- Go %s, wazero %s, commit %s%s", m.goVersion, m.wazero, m.commit, dirty)
	if m.rabbitmqVersion != "" {
		fmt.Fprintf(&b, ", RabbitMQ %s", m.rabbitmqVersion)
	}
	b.WriteString("\n- Each figure: median of the runs, with min – max. p50 / p99: latency percentiles (medians over runs).\n" +
		"  CPU µs/op: CPU time per operation of this process (all threads), plus, in RabbitMQ rows, of the host\n" +
		"  process and RabbitMQ: on a loaded machine it says what an operation costs, wall time also how long it waited for a core.\n\n")
	b.WriteString("| Benchmark | Median | Min – max | p50 / p99 | CPU µs/op | Target | Result |\n")
	b.WriteString("|---|---:|---:|---:|---:|---|---|\n")
	last := ""
	for _, r := range rows {
		if r.section != last {
			for _, s := range sections {
				if s.id == r.section {
					fmt.Fprintf(&b, "| **%s** | | | | | | |\n", s.title)
				}
			}
			last = r.section
		}
		med, rng, lat, cpu, result := r.cells()
		name := r.name
		if r.note != "" {
			name += " (" + r.note + ")"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", name, med, rng, lat, cpu, r.target, result)
	}
	return b.String()
}
