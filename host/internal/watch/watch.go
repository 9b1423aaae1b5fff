package watch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"

	"github.com/nuropb/nuropb/internal/wasmsection"
)

// DefaultQuiet is the quiet period used when Options.Quiet is 0: long
// enough to cover the gaps between the chunks of a cp or a linker's writes,
// short enough that a reload feels immediate.
const DefaultQuiet = 100 * time.Millisecond

// DefaultPartialWait is how long an unparseable file may stay unchanged
// before it is reported anyway, when Options.PartialWait is 0.
const DefaultPartialWait = 2 * time.Second

// Options tune a Watcher. The zero value is ready to use.
type Options struct {
	// Quiet is how long a path must see no event, with its size and mtime
	// unchanged, before it is looked at. 0 means DefaultQuiet.
	Quiet time.Duration
	// PartialWait is how long a file that is not a complete WebAssembly
	// binary may stay unchanged before it is reported anyway (so a writer
	// pausing mid-file is waited for, and a truncated file is still
	// refused with a reason). 0 means DefaultPartialWait.
	PartialWait time.Duration
	// Folder says which subfolders of the watched folder hold modules
	// (tenant folders); nil means all. Hidden folders never do.
	Folder func(name string) bool
	// Logger receives the watcher's own lines; nil means slog.Default().
	Logger *slog.Logger
}

// ChangeFunc is told that the module file at path has new content. A nil
// error means the content was taken; the watcher then skips identical
// content later. After an error, the same content written again is
// reported again, so an operator can retry by rewriting the file.
type ChangeFunc func(ctx context.Context, path string) error

// RemoveFunc is told that the module file at path is gone.
type RemoveFunc func(ctx context.Context, path string)

// Watcher watches one modules folder. Build it with New, then call Run
// once (or Close if Run will not be called).
type Watcher struct {
	dir  string
	opts Options
	log  *slog.Logger
	fsw  *fsnotify.Watcher

	mu     sync.Mutex // guards ran and closed
	ran    bool
	closed bool
	// Owned by Run's goroutine once New returns.
	folders map[string]bool   // watched tenant folders
	entries map[string]*entry // module paths seen, by absolute path
}

// New starts watching dir and its module subfolders. Changes made from
// now on are reported by Run; files already there are the caller's to load.
func New(dir string, opts Options) (*Watcher, error) {
	if opts.Quiet < 0 || opts.PartialWait < 0 {
		return nil, fmt.Errorf("watch %s: negative Quiet (%s) or PartialWait (%s)", dir, opts.Quiet, opts.PartialWait)
	}
	if opts.Quiet == 0 {
		opts.Quiet = DefaultQuiet
	}
	if opts.PartialWait == 0 {
		opts.PartialWait = DefaultPartialWait
	}
	folder := opts.Folder
	opts.Folder = func(name string) bool {
		return !strings.HasPrefix(name, ".") && (folder == nil || folder(name))
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	w := &Watcher{dir: dir, opts: opts, log: opts.Logger, fsw: fsw, folders: map[string]bool{}, entries: map[string]*entry{}}
	if err := fsw.Add(dir); err != nil {
		_ = fsw.Close()
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		_ = fsw.Close()
		return nil, fmt.Errorf("watch %s: %w", dir, err)
	}
	// Modules already here are known, without a hash: a tenant folder
	// moved away later sends no event for them, and the first change to
	// one is reported even if the content matches what the caller loaded.
	for _, e := range entries {
		path := filepath.Join(dir, e.Name())
		switch {
		case e.IsDir() && opts.Folder(e.Name()):
			if err := w.addFolder(path); err != nil {
				_ = fsw.Close()
				return nil, err
			}
			sub, err := os.ReadDir(path)
			if err != nil {
				_ = fsw.Close()
				return nil, fmt.Errorf("watch %s: %w", path, err)
			}
			for _, s := range sub {
				if !s.IsDir() && IsModule(s.Name()) {
					w.known(filepath.Join(path, s.Name()))
				}
			}
		case !e.IsDir() && IsModule(e.Name()):
			w.known(path)
		}
	}
	return w, nil
}

func (w *Watcher) known(path string) { w.entries[path] = &entry{path: path} }

// Close releases the watch. Run calls it on its way out; call it yourself
// only if Run will not be called.
func (w *Watcher) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	return w.fsw.Close()
}

func (w *Watcher) addFolder(path string) error {
	if err := w.fsw.Add(path); err != nil {
		return fmt.Errorf("watch %s: %w", path, err)
	}
	w.folders[path] = true
	return nil
}

// IsModule reports whether a file name is a module file the watcher cares
// about: *.wasm, not hidden. Editors' and tools' temporary names (.x.swp,
// x.wasm~, x.wasm.tmp, .x.wasm.partial) all fail it.
func IsModule(name string) bool {
	return strings.HasSuffix(name, ".wasm") && !strings.HasPrefix(name, ".")
}

// fileStat is what the stability check compares.
type fileStat struct {
	exists bool
	size   int64
	mtime  time.Time
}

func statOf(path string) (fileStat, error) {
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fileStat{}, nil
	case err != nil:
		return fileStat{}, err
	case !fi.Mode().IsRegular():
		return fileStat{}, fmt.Errorf("%s is not a regular file", path)
	}
	return fileStat{exists: true, size: fi.Size(), mtime: fi.ModTime()}, nil
}

// entry is the watcher's state for one module path. Only Run's goroutine
// touches it.
type entry struct {
	path  string
	probe fileStat // as stat'ed at the last event

	timer *time.Timer
	gen   uint64 // which timer is current; a stale one's firing is ignored
	armed bool

	busy bool // a settle (and maybe a callback) is running
	due  bool // the timer fired while busy: settle again when done

	hash         string   // content last taken by onChange
	partial      fileStat // the unparseable file being waited for
	partialSince time.Time
}

type fired struct {
	path string
	gen  uint64
}

// outcome is what a settle found, for Run's goroutine to record.
type outcome int

const (
	unstable   outcome = iota // changed during the quiet period: wait again
	incomplete                // not a complete wasm binary yet: wait again
	unchanged                 // same content as last taken
	taken                     // onChange accepted it
	failed                    // onChange returned an error, or the file could not be read
	removed                   // the file is gone; onRemove was told
)

type settled struct {
	path    string
	outcome outcome
	stat    fileStat
	hash    string
}

// Run reports settled changes until ctx ends, then waits for callbacks in
// progress and closes the watch. Callbacks for one path never overlap, and
// a path that changes while its callback runs is settled again afterwards;
// different paths are handled in parallel. Callbacks get ctx: a caller that
// must not abandon work half done when ctx ends should use a context of its
// own. Run returns nil once stopped, or an error if called twice.
func (w *Watcher) Run(ctx context.Context, onChange ChangeFunc, onRemove RemoveFunc) error {
	w.mu.Lock()
	if w.ran || w.closed {
		w.mu.Unlock()
		return errors.New("watch: Run called twice or after Close")
	}
	w.ran = true
	w.mu.Unlock()
	defer w.Close()

	entries := w.entries
	due := make(chan fired)
	done := make(chan settled)
	quit := make(chan struct{})
	var workers sync.WaitGroup
	defer func() {
		for _, e := range entries {
			if e.timer != nil {
				e.timer.Stop()
			}
		}
		close(quit) // unblocks timers and workers sending to this loop
		workers.Wait()
	}()

	arm := func(e *entry, d time.Duration) {
		if e.timer != nil {
			e.timer.Stop()
		}
		e.gen++
		e.armed = true
		f := fired{e.path, e.gen}
		e.timer = time.AfterFunc(d, func() {
			select {
			case due <- f:
			case <-quit:
			}
		})
	}
	touch := func(path string) {
		e := entries[path]
		if e == nil {
			e = &entry{path: path}
			entries[path] = e
		}
		st, err := statOf(path)
		if err != nil {
			w.log.Debug("stat", "file", path, "err", err)
		}
		e.probe = st
		arm(e, w.opts.Quiet)
	}
	settle := func(e *entry) {
		e.busy = true
		snap := *e
		workers.Go(func() {
			r := w.settle(ctx, &snap, onChange, onRemove)
			select {
			case done <- r:
			case <-quit:
			}
		})
	}

	for {
		select {
		case <-ctx.Done():
			return nil

		case ev, ok := <-w.fsw.Events:
			if !ok {
				return nil
			}
			w.event(ev, touch)

		case err, ok := <-w.fsw.Errors:
			if !ok {
				return nil
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				// Events were lost: look at everything again. Settled
				// content that did not change is skipped by its hash.
				w.log.Warn("file events overflowed; rescanning the modules folder", "dir", w.dir)
				w.rescan(touch)
				continue
			}
			w.log.Warn("watching the modules folder", "dir", w.dir, "err", err)

		case f := <-due:
			e := entries[f.path]
			if e == nil || e.gen != f.gen {
				continue
			}
			e.armed = false
			if e.busy {
				e.due = true
				continue
			}
			settle(e)

		case r := <-done:
			e := entries[r.path]
			e.busy = false
			switch r.outcome {
			case unstable:
				e.probe = r.stat
				if !e.armed {
					arm(e, w.opts.Quiet)
				}
			case incomplete:
				if r.stat != e.partial {
					e.partial, e.partialSince = r.stat, time.Now()
				}
				if !e.armed {
					arm(e, max(w.opts.Quiet, time.Until(e.partialSince.Add(w.opts.PartialWait))))
				}
			case unchanged, taken:
				e.hash, e.partial = r.hash, fileStat{}
			case failed:
				e.hash, e.partial = "", fileStat{}
			case removed:
				if !e.armed && !e.due {
					delete(entries, r.path)
					continue
				}
				e.hash, e.partial = "", fileStat{}
			}
			if e.due {
				e.due = false
				settle(e)
			}
		}
	}
}

// event turns one fsnotify event into work: module paths are touched (their
// quiet period restarts), new tenant folders are watched and scanned, and a
// tenant folder that goes away takes its modules with it.
func (w *Watcher) event(ev fsnotify.Event, touch func(string)) {
	path := filepath.Clean(ev.Name)
	parent, name := filepath.Dir(path), filepath.Base(path)
	top := parent == w.dir
	switch {
	case !top && !w.folders[parent]:
		return
	case top && w.folders[path] && ev.Has(fsnotify.Remove|fsnotify.Rename):
		// A folder moved away sends no events for its files, so every
		// module known there is looked at (and found gone).
		delete(w.folders, path)
		_ = w.fsw.Remove(path) // already gone after a delete; needed after a move
		for p := range w.entries {
			if filepath.Dir(p) == path {
				touch(p)
			}
		}
		return
	case top && ev.Has(fsnotify.Create) && w.opts.Folder(name):
		if fi, err := os.Stat(path); err == nil && fi.IsDir() {
			w.newFolder(path, touch)
			return
		}
	}
	if IsModule(name) {
		touch(path)
	}
}

// newFolder watches a tenant folder that appeared and touches the modules
// already in it: a folder moved in, or files written before the watch was
// added, send no events of their own.
func (w *Watcher) newFolder(path string, touch func(string)) {
	if w.folders[path] {
		return
	}
	if err := w.addFolder(path); err != nil {
		w.log.Error("cannot watch the new tenant folder; its modules will not be loaded", "folder", path, "err", err)
		return
	}
	w.log.Info("watching new tenant folder", "folder", path)
	files, err := os.ReadDir(path)
	if err != nil {
		w.log.Error("reading the new tenant folder", "folder", path, "err", err)
		return
	}
	for _, f := range files {
		if !f.IsDir() && IsModule(f.Name()) {
			touch(filepath.Join(path, f.Name()))
		}
	}
}

// rescan touches every module present and every path known, after events
// were lost.
func (w *Watcher) rescan(touch func(string)) {
	for p := range w.entries {
		touch(p)
	}
	for folder := range w.folders {
		if fi, err := os.Stat(folder); err != nil || !fi.IsDir() {
			delete(w.folders, folder)
			_ = w.fsw.Remove(folder)
		}
	}
	list, err := os.ReadDir(w.dir)
	if err != nil {
		w.log.Error("rescanning the modules folder", "dir", w.dir, "err", err)
		return
	}
	for _, f := range list {
		p := filepath.Join(w.dir, f.Name())
		switch {
		case f.IsDir() && w.opts.Folder(f.Name()) && !w.folders[p]:
			w.newFolder(p, touch)
		case f.IsDir() && w.folders[p]:
			sub, err := os.ReadDir(p)
			if err != nil {
				continue
			}
			for _, s := range sub {
				if !s.IsDir() && IsModule(s.Name()) {
					touch(filepath.Join(p, s.Name()))
				}
			}
		case !f.IsDir() && IsModule(f.Name()):
			touch(p)
		}
	}
}

// settle decides, off Run's goroutine, what a quiet path's state means, and
// calls back if the file is gone or has new complete content.
func (w *Watcher) settle(ctx context.Context, e *entry, onChange ChangeFunc, onRemove RemoveFunc) settled {
	r := settled{path: e.path}
	st, err := statOf(e.path)
	if err != nil {
		w.log.Debug("not a module file now", "file", e.path, "err", err)
		r.outcome = failed
		return r
	}
	r.stat = st
	if !st.exists {
		onRemove(ctx, e.path)
		r.outcome = removed
		return r
	}
	if st != e.probe {
		r.outcome = unstable
		return r
	}
	data, err := os.ReadFile(e.path)
	if err != nil {
		// Gone between the stat and the read, say; its event follows.
		r.outcome = unstable
		return r
	}
	if after, _ := statOf(e.path); after != st || int64(len(data)) != st.size {
		r.outcome = unstable
		return r
	}
	if _, err := wasmsection.Parse(data); err != nil {
		if st != e.partial || time.Since(e.partialSince) < w.opts.PartialWait {
			w.log.Debug("waiting for the rest of the file", "file", e.path, "size", st.size, "err", err)
			r.outcome = incomplete
			return r
		}
		w.log.Debug("file stays incomplete; reporting it", "file", e.path, "size", st.size, "err", err)
	}
	sum := sha256.Sum256(data)
	r.hash = hex.EncodeToString(sum[:])
	if r.hash == e.hash {
		w.log.Debug("module file rewritten with the same content", "file", e.path)
		r.outcome = unchanged
		return r
	}
	if err := onChange(ctx, e.path); err != nil {
		r.outcome = failed
		return r
	}
	r.outcome = taken
	return r
}
