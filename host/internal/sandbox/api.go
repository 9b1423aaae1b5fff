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
	// TenantMaxRunning caps the calls running guest code at once across
	// every module of Source.Tenant this Engine loads (gate.go): a call
	// beyond it waits for a slot, bounded by its deadline, and a call
	// blocked in nuropb.call or nuropb.send gives its slot up meanwhile.
	// Unlike the fields above, 0 is valid and means no cap; the host
	// always sets one.
	TenantMaxRunning int
}

// Imports is what a guest's host calls reach. The host package implements it
// per module version; the sandbox only moves bytes across the ABI and
// enforces sizes. Each method receives the context given to Handle (its
// values, and whatever the host attached with WithCallInfo); Call and Send
// get its deadline capped by CallTimeout. During _initialize, Log gets the
// context of Load or of the Handle that started the instance, and Call and
// Send trap. Byte slices passed in are copies the method may keep.
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
	CacheDir string       // wazero compilation cache directory (a wazero-<version> subdirectory is used); "" keeps the cache in memory
	Logger   *slog.Logger // for the sandbox's own messages; nil means slog.Default()
}

// Source is one module file to load.
type Source struct {
	Name   string // for messages and logs, e.g. "default/greeter.wasm"
	Tenant string
	Bytes  []byte
	Limits Limits
}

// Engine compiles and instantiates modules. One per host (engine.go).
//
//	func NewEngine(ctx context.Context, cfg Config) (*Engine, error)
//	func (e *Engine) Load(ctx context.Context, src Source, imp Imports) (*Module, error)
//	func (e *Engine) Close(ctx context.Context) error
//
// Load checks the limits, compiles (sharing compiled code between identical
// bytes, refcounted by content hash; a nuropb.fs section is stripped first
// and mounted read-only at / instead), checks imports (only nuropb.log/call/
// send and a list of WASI functions) and exports, instantiates one instance
// (running _initialize), checks nuropb_abi_version, reads and validates the
// manifest with a codec limited to MaxMessageBytes, and pre-starts the rest
// of MinInstances. At least one instance (the one that described) is kept
// even when MinInstances is 0. Every failure is a *LoadError naming the file
// and the step (the Step* constants).
//
// Module (module.go):
//
//	func (m *Module) Manifest() *abi.Manifest
//	func (m *Module) Hash() string          // hex SHA-256 of the file bytes
//	func (m *Module) Name() string          // Source.Name
//	func (m *Module) Codec() *abi.Codec     // limited to MaxMessageBytes; decode replies with it
//	func (m *Module) Handle(ctx context.Context, envelope []byte) ([]byte, error)
//	func (m *Module) Stats() Stats
//	func (m *Module) Close(ctx context.Context) error // waits for in-flight calls until ctx ends
//
// Handle takes an idle instance (starting one if fewer than MaxInstances
// exist, else waiting until ctx ends), writes the envelope into a buffer the
// guest allocated with nuropb_alloc, calls nuropb_handle, copies the reply
// out and checks it is one well-formed CBOR map within the codec's limits.
// The call runs until min(ctx's deadline, now+CallTimeout), and ctx's
// cancellation interrupts it too. Failures are *abi.Error whose message
// names the module:
//   - timeout: the deadline passed while waiting for an instance, or the
//     call was interrupted at its deadline (the instance is discarded);
//   - trapped: the guest faulted (panic, unreachable, out-of-bounds access,
//     stack overflow, out of memory, proc_exit); the instance is discarded
//     and replaced on demand;
//   - resource_exhausted: envelope or reply over MaxMessageBytes, or the
//     guest could not allocate the input buffer;
//   - internal: the reply is not one well-formed CBOR map, or lies outside
//     guest memory. Handle checks well-formedness (limits, indefinite
//     lengths), not duplicate keys or UTF-8: a full decode costs ~3-5 us and
//     the host decodes the reply anyway; it should answer internal, naming
//     the module, when that decode fails;
//   - unavailable: the module is closed (or was closed during the call), or
//     ctx was canceled.
//
// The input buffer is kept in the guest between calls (re-allocated when an
// envelope outgrows it, one-off above 64 KiB): a guest must not keep
// pointers into it after nuropb_handle returns. This saves two guest calls
// per request; see RATIONALE.md.
//
// Stats counts, for one module version:
type Stats struct {
	Instances int    // live instances
	Busy      int    // instances in a call
	Calls     uint64 // calls that ran on an instance, whatever their outcome
	Traps     uint64 // instances discarded after a trap or interrupt
	// MemoryPages is the linear memory of every live instance, in 64 KiB
	// pages, as it was when each last finished a call.
	MemoryPages uint64
}

// LoadError says why a module was refused at load.
type LoadError struct {
	File   string
	Step   string // limits, read, compile, imports, exports, instantiate, abi, describe, manifest (Step* constants)
	Reason string
	Err    error
}

func (e *LoadError) Error() string {
	return e.File + ": " + e.Step + ": " + e.Reason
}

func (e *LoadError) Unwrap() error { return e.Err }
