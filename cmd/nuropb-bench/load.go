package main

import (
	"bytes"
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// loadResult is what one timed run of a call loop measured.
type loadResult struct {
	calls   int
	elapsed time.Duration
	lat     []time.Duration // sorted
	cpu     float64         // CPU µs per call: this process's, plus the meter's other processes
}

func (r loadResult) rate() float64 { return float64(r.calls) / r.elapsed.Seconds() }

func (r loadResult) p(q float64) time.Duration { return percentile(r.lat, q) }

// drive runs call from inflight goroutines for dur, after a warm-up of
// warm whose calls are not counted, and records every call's latency.
// CPU time is counted by meter (this process alone when nil).
func drive(ctx context.Context, inflight int, warm, dur time.Duration, call func(context.Context) error, meter *cpuMeter) (loadResult, error) {
	if warm > 0 {
		if _, err := driveOnce(ctx, inflight, warm, call, newCPUMeter()); err != nil {
			return loadResult{}, err
		}
	}
	if meter == nil {
		meter = newCPUMeter()
	}
	return driveOnce(ctx, inflight, dur, call, meter)
}

func driveOnce(ctx context.Context, inflight int, dur time.Duration, call func(context.Context) error, meter *cpuMeter) (loadResult, error) {
	var (
		wg      sync.WaitGroup
		stop    atomic.Bool
		errOnce sync.Once
		first   error
	)
	lats := make([][]time.Duration, inflight)
	meter.begin()
	start := time.Now()
	end := start.Add(dur)
	for i := range inflight {
		wg.Go(func() {
			lat := make([]time.Duration, 0, 4096)
			for !stop.Load() {
				t0 := time.Now()
				if !t0.Before(end) {
					break
				}
				if err := call(ctx); err != nil {
					errOnce.Do(func() { first = err })
					stop.Store(true)
					break
				}
				lat = append(lat, time.Since(t0))
			}
			lats[i] = lat
		})
	}
	wg.Wait()
	r := loadResult{elapsed: time.Since(start)}
	if first != nil {
		return r, first
	}
	if err := ctx.Err(); err != nil {
		return r, err
	}
	r.lat = slices.Concat(lats...)
	slices.Sort(r.lat)
	r.calls = len(r.lat)
	r.cpu = meter.perOp(max(r.calls, 1))
	return r, nil
}

// cpuTime is this process's CPU time so far (user+system, all threads): on
// a shared machine it says what work cost, where wall time also says how
// long the work waited for a core.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is the CPU time (user+system) used so far by process pid, 0 when
// it cannot be read.
func procCPU(pid int) time.Duration {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// Fields after the ")" that closes the command name; utime and stime
	// are the 14th and 15th fields of the whole line, in clock ticks.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * (time.Second / 100) // USER_HZ is 100 on Linux
}

// rabbitPIDs finds RabbitMQ's Erlang VM processes, to count their CPU time
// in RabbitMQ rows; none when RabbitMQ runs elsewhere.
func rabbitPIDs() []int {
	var pids []int
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if comm, err := os.ReadFile("/proc/" + d.Name() + "/comm"); err == nil && strings.TrimSpace(string(comm)) == "beam.smp" {
			pids = append(pids, pid)
		}
	}
	return pids
}

// cpuMeter sums the CPU time of this process and of other processes (a
// host child, RabbitMQ) between start and stop.
type cpuMeter struct {
	pids  []int
	start time.Duration
}

func newCPUMeter(pids ...int) *cpuMeter { return &cpuMeter{pids: pids} }

func (m *cpuMeter) now() time.Duration {
	t := cpuTime()
	for _, p := range m.pids {
		t += procCPU(p)
	}
	return t
}

func (m *cpuMeter) begin() { m.start = m.now() }

// perOp is the CPU µs per operation since begin.
func (m *cpuMeter) perOp(ops int) float64 {
	return float64(m.now()-m.start) / float64(time.Microsecond) / float64(ops)
}
