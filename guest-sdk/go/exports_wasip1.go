//go:build wasip1

package nuropb

import (
	"runtime"
	"unsafe"

	"github.com/nuropb/nuropb/abi"
)

// The wasm glue: ABI v1's exports and imports, and nothing else. Pointers are
// 32-bit offsets into linear memory, where Go's addresses are the offsets.

//go:wasmimport nuropb log
func importLog(level int32, ptr, n uint32)

//go:wasmimport nuropb call
func importCall(ptr, n uint32) uint64

//go:wasmimport nuropb send
func importSend(ptr, n uint32) int32

type wasmHost struct{}

func defaultHost() hostFuncs { return wasmHost{} }

func (wasmHost) Log(level abi.LogLevel, msg string) {
	importLog(int32(level), uint32(uintptr(unsafe.Pointer(unsafe.StringData(msg)))), uint32(len(msg)))
	runtime.KeepAlive(msg)
}

func (wasmHost) Call(req []byte) []byte {
	packed := importCall(uint32(base(req)), uint32(len(req)))
	runtime.KeepAlive(req)
	ptr, n := abi.UnpackPtrLen(packed)
	if ptr == 0 {
		return nil
	}
	// The host wrote the reply into a buffer it got from nuropb_alloc.
	reply, ok := current.mem.view(uintptr(ptr), int(n))
	if !ok {
		return nil
	}
	return reply
}

func (wasmHost) Send(msg []byte) int32 {
	status := importSend(uint32(base(msg)), uint32(len(msg)))
	runtime.KeepAlive(msg)
	return status
}

func pack(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return abi.PackPtrLen(uint32(base(b)), uint32(len(b)))
}

//go:wasmexport nuropb_abi_version
func exportABIVersion() int32 { return abi.Version }

//go:wasmexport nuropb_alloc
func exportAlloc(size int32) uint32 {
	if size < 0 || current == nil {
		return 0
	}
	return uint32(base(current.mem.alloc(int(size))))
}

//go:wasmexport nuropb_dealloc
func exportDealloc(ptr, size int32) {
	if current != nil {
		current.mem.free(uintptr(uint32(ptr)))
	}
}

//go:wasmexport nuropb_describe
func exportDescribe() uint64 {
	if current == nil {
		return 0
	}
	return pack(current.manifest)
}

//go:wasmexport nuropb_handle
func exportHandle(ptr, n int32) uint64 {
	if current == nil {
		return 0
	}
	frame, ok := current.mem.view(uintptr(uint32(ptr)), int(uint32(n)))
	if !ok {
		return pack(current.serve(nil, abi.Errorf(abi.CodeInternal,
			"nuropb_handle(%#x, %d): the envelope is not inside a buffer from nuropb_alloc", uint32(ptr), uint32(n))))
	}
	return pack(current.handle(frame))
}
