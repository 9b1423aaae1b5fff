package abi

// Version is the ABI version this package describes. A guest whose
// nuropb_abi_version export returns anything else is refused at load.
const Version = 1

// Names of the functions a guest exports.
const (
	ExportABIVersion = "nuropb_abi_version"
	ExportAlloc      = "nuropb_alloc"
	ExportDealloc    = "nuropb_dealloc"
	ExportDescribe   = "nuropb_describe"
	ExportHandle     = "nuropb_handle"
)

// RequiredExports lists every export a guest must have, in the order the
// loader reports missing ones.
var RequiredExports = []string{ExportABIVersion, ExportAlloc, ExportDealloc, ExportDescribe, ExportHandle}

// Names of the host functions a guest may import.
const (
	ImportModule = "nuropb"
	ImportLog    = "log"
	ImportCall   = "call"
	ImportSend   = "send"
)

// LogLevel is the level argument of the log import. The values match
// log/slog's levels so the host can pass them through.
type LogLevel int32

// Log levels a guest may pass to the log import.
const (
	LogDebug LogLevel = -4
	LogInfo  LogLevel = 0
	LogWarn  LogLevel = 4
	LogError LogLevel = 8
)

// PackPtrLen packs a guest pointer and length into the i64 that
// nuropb_describe, nuropb_handle and call return.
func PackPtrLen(ptr, length uint32) uint64 { return uint64(ptr)<<32 | uint64(length) }

// UnpackPtrLen splits the i64 returned by a guest export into pointer and length.
func UnpackPtrLen(v uint64) (ptr, length uint32) { return uint32(v >> 32), uint32(v) }
