package host

import (
	"context"
	"errors"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/host/internal/watch"
)

// watching is the hot-reload goroutine of a Host: it runs from Start until
// Shutdown stops it, before the services drain.
type watching struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// startWatch begins hot reload when Config.Watch is set. It runs before
// Start loads the existing files, so nothing written meanwhile is missed;
// a file loaded by both is compared by hash and loaded once. A folder that
// cannot be watched (inotify limits, say) is logged and the host serves
// without hot reload rather than not at all.
func (h *Host) startWatch() {
	if !h.cfg.Watch {
		return
	}
	w, err := watch.New(h.dir, watch.Options{Logger: h.log, Folder: abi.ValidName})
	if err != nil {
		h.log.Error("hot reload is off: cannot watch the modules folder", "modules_dir", h.dir, "err", err)
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	wt := &watching{cancel: cancel, done: make(chan struct{})}
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		cancel()
		_ = w.Close()
		return
	}
	h.watching = wt
	h.mu.Unlock()
	go func() {
		defer close(wt.done)
		_ = w.Run(ctx, h.reload, h.unload)
	}()
	h.log.Info("hot reload on", "modules_dir", h.dir, "quiet", watch.DefaultQuiet)
}

// reload is the watcher's change callback. It loads on runCtx, not the
// watcher's context, so a swap under way when Shutdown stops the watcher
// finishes its drain instead of cutting the old version's calls short.
// LoadFile logs loads, swaps and refusals itself.
func (h *Host) reload(_ context.Context, path string) error {
	err := h.LoadFile(h.runCtx, path)
	var ref *Refusal
	if err != nil && !errors.As(err, &ref) && !errors.Is(err, ErrClosed) {
		h.log.Error("module not reloaded", "file", path, "err", err)
	}
	return err
}

// unload is the watcher's removal callback. RemoveFile logs the removal
// and its errors; a file that served nothing is a no-op.
func (h *Host) unload(_ context.Context, path string) {
	_ = h.RemoveFile(h.runCtx, path)
}

// stopWatch stops the watcher and waits, until ctx ends, for a load it
// started to finish.
func (h *Host) stopWatch(ctx context.Context) {
	h.mu.Lock()
	wt := h.watching
	h.mu.Unlock()
	if wt == nil {
		return
	}
	wt.cancel()
	select {
	case <-wt.done:
	case <-ctx.Done():
		h.log.Warn("hot reload still loading a module at shutdown", "err", ctx.Err())
	}
}
