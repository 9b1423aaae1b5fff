//go:build unix

package memory_test

import (
	"syscall"
	"time"
)

// cpuTime is the CPU time the process has used. Benchmarks report it per
// operation because wall time means little on a machine shared with other
// work: CPU time is what the broker costs the host.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
