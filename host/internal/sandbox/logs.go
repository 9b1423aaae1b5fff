package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/nuropb/nuropb/abi"
)

// maxLogLine caps one guest log line (log import or stdout/stderr line), in
// bytes; the rest of a longer line is dropped and the line marked.
const maxLogLine = 4096

const truncatedMark = " …[truncated]"

// logLimiter is a token bucket on lines and bytes shared by every instance
// of a module version and by the log import, so a guest cannot flood the
// host's logs whichever way it writes. Excess lines are dropped and counted;
// the count is reported in one notice line.
type logLimiter struct {
	mu                 sync.Mutex
	lineRate, byteRate float64 // tokens per second; also the burst
	lines, bytes       float64
	last               time.Time
	dropped            int
	lastNotice         time.Time
}

func newLogLimiter(linesPerSec, bytesPerSec int) *logLimiter {
	return &logLimiter{
		lineRate: float64(linesPerSec), byteRate: float64(bytesPerSec),
		lines: float64(linesPerSec), bytes: float64(bytesPerSec),
		last: time.Now(),
	}
}

// allow takes one line of n bytes from the bucket. dropped is the number of
// lines refused since the last report, to announce before this line (at
// most one such notice a second; the rest wait for the end of the call).
func (l *logLimiter) allow(n int) (ok bool, dropped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if dt := now.Sub(l.last).Seconds(); dt > 0 {
		l.lines = min(l.lineRate, l.lines+dt*l.lineRate)
		l.bytes = min(l.byteRate, l.bytes+dt*l.byteRate)
		l.last = now
	}
	if l.lines < 1 || l.bytes < float64(n) {
		l.dropped++
		return false, 0
	}
	l.lines--
	l.bytes -= float64(n)
	if l.dropped > 0 && now.Sub(l.lastNotice) >= time.Second {
		dropped, l.dropped = l.dropped, 0
		l.lastNotice = now
	}
	return true, dropped
}

// takeDropped returns and resets the count of dropped lines not yet reported.
func (l *logLimiter) takeDropped() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	d := l.dropped
	l.dropped = 0
	return d
}

// emitLog sends one guest line through the module's limiter to Imports.Log.
func (m *Module) emitLog(ctx context.Context, level abi.LogLevel, line []byte, truncated bool) {
	if len(line) > m.limits.LogBytesPerSec { // it could never pass the bucket
		line, truncated = line[:m.limits.LogBytesPerSec], true
	}
	ok, dropped := m.logs.allow(len(line))
	if !ok {
		return
	}
	if dropped > 0 {
		m.reportDropped(ctx, dropped)
	}
	msg := string(line)
	if !utf8.ValidString(msg) {
		msg = string(bytes.ToValidUTF8(line, []byte("\uFFFD")))
	}
	if truncated {
		msg += truncatedMark
	}
	m.imp.Log(ctx, level, msg)
}

func (m *Module) reportDropped(ctx context.Context, n int) {
	m.imp.Log(ctx, abi.LogWarn, fmt.Sprintf("%d log lines dropped: over the limit of %d lines/s and %d bytes/s",
		n, m.limits.LogLinesPerSec, m.limits.LogBytesPerSec))
}

// flushDropped reports lines dropped so far, so a flood followed by silence
// is still announced (called at the end of every call).
func (m *Module) flushDropped(ctx context.Context) {
	if n := m.logs.takeDropped(); n > 0 {
		m.reportDropped(ctx, n)
	}
}

// lineWriter turns one instance's stdout or stderr into log lines. It is
// called synchronously from fd_write on the goroutine running the instance,
// so it needs no lock; its buffer is reused for the instance's life.
type lineWriter struct {
	inst      *instance
	level     abi.LogLevel
	buf       []byte
	truncated bool
}

func newLineWriter(inst *instance, level abi.LogLevel) *lineWriter {
	return &lineWriter{inst: inst, level: level}
}

// Write implements io.Writer. It never fails: the guest must not learn
// whether its output was kept.
func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.add(p)
			break
		}
		w.add(p[:i])
		w.flush()
		p = p[i+1:]
	}
	return n, nil
}

func (w *lineWriter) add(p []byte) {
	room := maxLogLine - len(w.buf)
	if len(p) > room {
		p = p[:room]
		w.truncated = true
	}
	if w.buf == nil && len(p) > 0 {
		w.buf = make([]byte, 0, 256)
	}
	w.buf = append(w.buf, p...)
}

// flush emits the pending line, if any.
func (w *lineWriter) flush() {
	line := bytes.TrimSuffix(w.buf, []byte("\r"))
	if len(line) > 0 || w.truncated {
		w.inst.m.emitLog(w.inst.logCtx, w.level, line, w.truncated)
	}
	w.buf = w.buf[:0]
	w.truncated = false
}
