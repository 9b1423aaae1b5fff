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
	cancel      context.CancelFunc // stops the watcher
	cancelLoads context.CancelFunc // abandons a load in progress: lock waits and drains
	done        chan struct{}
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
	// Loads run on their own context, not the watcher's, so a swap under
	// way when Shutdown stops the watcher finishes its drain instead of
	// cutting the old version's calls short.
	loadCtx, cancelLoads := context.WithCancel(h.runCtx)
	wt := &watching{cancel: cancel, cancelLoads: cancelLoads, done: make(chan struct{})}
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		cancel()
		cancelLoads()
		_ = w.Close()
		return
	}
	h.watching = wt
	h.mu.Unlock()
	go func() {
		defer close(wt.done)
		_ = w.Run(ctx,
			func(_ context.Context, path string) error { return h.reload(loadCtx, path) },
			func(_ context.Context, path string) { _ = h.RemoveFile(loadCtx, path) })
	}()
	h.log.Info("hot reload on", "modules_dir", h.dir, "quiet", watch.DefaultQuiet)
}

// reload is the watcher's change callback. LoadFile logs loads, swaps and
// refusals itself; RemoveFile, the removal callback, logs removals.
func (h *Host) reload(ctx context.Context, path string) error {
	err := h.LoadFile(ctx, path)
	var ref *Refusal
	if err != nil && !errors.As(err, &ref) && !errors.Is(err, ErrClosed) {
		h.log.Error("module not reloaded", "file", path, "err", err)
	}
	return err
}

// stopWatch stops the watcher and waits for a load it started. When ctx
// ends first, the load is told to give up its waits (the old version's
// drain, say), but is still waited for: Shutdown closes the engine next,
// and closing it under a compile in progress would crash the process.
func (h *Host) stopWatch(ctx context.Context) {
	h.mu.Lock()
	wt := h.watching
	h.mu.Unlock()
	if wt == nil {
		return
	}
	wt.cancel()
	defer wt.cancelLoads()
	select {
	case <-wt.done:
		return
	case <-ctx.Done():
	}
	h.log.Warn("hot reload still loading a module at shutdown; cutting its waits short", "err", ctx.Err())
	wt.cancelLoads()
	<-wt.done
}
