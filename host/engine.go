package host

import (
	"context"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/host/internal/sandbox"
)

// module is what the host needs of a loaded module version. *sandbox.Module
// is the real one; tests substitute Go fakes so dispatcher rules can be
// checked without compiling WebAssembly. Handle must enforce ctx's deadline
// itself: the dispatcher's call context (guestCtx) reports a deadline that
// its Done does not close at, which saves a timer per call.
type module interface {
	Manifest() *abi.Manifest
	Hash() string
	Handle(ctx context.Context, envelope []byte) ([]byte, error)
	Stats() sandbox.Stats
	Close(ctx context.Context) error
}

// loader loads one module version.
type loader func(ctx context.Context, src sandbox.Source, imp sandbox.Imports) (module, error)

// startEngine builds the wazero engine and makes it the host's loader.
func (h *Host) startEngine(ctx context.Context) error {
	e, err := sandbox.NewEngine(ctx, sandbox.Config{CacheDir: h.cfg.CacheDir, Logger: h.log})
	if err != nil {
		return err
	}
	h.load = func(ctx context.Context, src sandbox.Source, imp sandbox.Imports) (module, error) {
		m, err := e.Load(ctx, src, imp)
		if err != nil {
			return nil, err // not m: a typed nil would not compare equal to nil
		}
		return m, nil
	}
	h.closeEngine = e.Close
	return nil
}
