// This file is the contract between the sandbox and the host package; the
// implementation lives beside it.

package sandbox

import (
	"context"
	"log/slog"
	"time"

	"github.com/nuropb/nuropb/abi"
)

// Limits bound one module version. Zero values are invalid: the host fills
// every field from its config before loading.
type Limits struct {
	MemoryPages     uint32        // linear memory cap, 64 KiB pages
	CallTimeout     time.Duration // cap on one nuropb_handle call (the request's own deadline may be shorter)
	MinInstances    int           // instances pre-started before a version serves
	MaxInstances    int           // instances in parallel; calls beyond wait for one (bounded by their deadline)
	MaxMessageBytes int           // envelope in, reply out, and every call/send frame
	LogLinesPerSec  int           // log import and stdout/stderr lines per second (burst = 1 s worth)
	LogBytesPerSec  int
}

// Imports is what a guest's host calls reach. The host package implements it
// per module version; the sandbox only moves bytes across the ABI and
// enforces sizes. Each method receives the context of the nuropb_handle
// call that is running (its deadline, and whatever the host attached with
// WithCallInfo).
type Imports interface {
	// Log records a guest log line (already rate- and size-limited).
	Log(ctx context.Context, level abi.LogLevel, msg string)
	// Call performs a request envelope (CBOR) and returns the response
	// envelope (CBOR). It never fails: errors travel in the response.
	Call(ctx context.Context, request []byte) []byte
	// Send performs a command or event envelope (CBOR).
	Send(ctx context.Context, envelope []byte) error
}

// Config configures an Engine.
type Config struct {
	CacheDir string // wazero compilation cache directory; "" disables the on-disk cache
	Logger   *slog.Logger
}

// Source is one module file to load.
type Source struct {
	Name   string // for messages and logs, e.g. "default/greeter.wasm"
	Tenant string
	Bytes  []byte
	Limits Limits
}

// Engine compiles and instantiates modules. One per host.
//
//	func NewEngine(ctx context.Context, cfg Config) (*Engine, error)
//	func (e *Engine) Load(ctx context.Context, src Source, imp Imports) (*Module, error)
//	func (e *Engine) Close(ctx context.Context) error
//
// Load compiles (sharing compiled code between identical bytes, refcounted by
// content hash), checks imports (only granted ones), exports and ABI version,
// pre-starts MinInstances, reads and validates the manifest, and returns a
// Module ready to serve. Every failure is a *LoadError naming the file and
// the step.
//
// Module:
//
//	func (m *Module) Manifest() *abi.Manifest
//	func (m *Module) Hash() string          // hex SHA-256 of the file bytes
//	func (m *Module) Handle(ctx context.Context, envelope []byte) ([]byte, error)
//	func (m *Module) Stats() Stats
//	func (m *Module) Close(ctx context.Context) error // waits for in-flight calls until ctx ends
//
// Handle takes an idle instance (waiting until ctx's deadline), calls
// nuropb_handle, copies the reply out and returns it. Failures are *abi.Error:
// trapped (instance discarded and replaced), timeout (deadline hit: the
// instance is interrupted and discarded), resource_exhausted (a size limit),
// internal (malformed reply, checked with the codec's limits), unavailable
// (module closed).
type Stats struct {
	Instances int    // live instances
	Busy      int    // instances in a call
	Calls     uint64 // calls completed
	Traps     uint64 // instances discarded after a trap or interrupt
}

// LoadError says why a module was refused at load.
type LoadError struct {
	File   string
	Step   string // read, compile, imports, exports, abi, instantiate, describe, manifest
	Reason string
	Err    error
}

func (e *LoadError) Error() string {
	return e.File + ": " + e.Step + ": " + e.Reason
}

func (e *LoadError) Unwrap() error { return e.Err }
