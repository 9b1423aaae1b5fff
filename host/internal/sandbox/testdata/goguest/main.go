// Command goguest is a Go test guest for the sandbox (a wasip1 reactor).
// Methods are found by a byte scan of the envelope, not a CBOR decoder, to
// keep the guest small and its per-call cost low.
package main

import (
	"bytes"
	"time"
	"unsafe"
)

func main() {}

var buffers = map[uintptr][]byte{} // alive until nuropb_dealloc, or the GC frees them

//go:wasmexport nuropb_abi_version
func abiVersion() int32 { return 1 }

//go:wasmexport nuropb_alloc
func alloc(size int32) int32 {
	b := make([]byte, max(size, 1))
	p := uintptr(unsafe.Pointer(&b[0]))
	buffers[p] = b
	return int32(p)
}

//go:wasmexport nuropb_dealloc
func dealloc(ptr, size int32) { delete(buffers, uintptr(ptr)) }

var out []byte

func pack() int64 {
	if len(out) == 0 {
		return 0
	}
	return int64(uintptr(unsafe.Pointer(&out[0])))<<32 | int64(len(out))
}

func head(major byte, n int) {
	major <<= 5
	switch {
	case n < 24:
		out = append(out, major|byte(n))
	case n < 256:
		out = append(out, major|24, byte(n))
	case n < 65536:
		out = append(out, major|25, byte(n>>8), byte(n))
	default:
		out = append(out, major|26, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
}

func text(s string) { head(3, len(s)); out = append(out, s...) }

func reply(b []byte) int64 {
	out = out[:0]
	head(5, 2)
	text("kind")
	text("response")
	text("result")
	head(2, len(b))
	out = append(out, b...)
	return pack()
}

//go:wasmexport nuropb_describe
func describe() int64 {
	out = out[:0]
	head(5, 4)
	text("abi")
	out = append(out, 1)
	text("service")
	text("goguest")
	text("version")
	text("1.0.0")
	text("methods")
	head(5, 1)
	text("echo")
	head(5, 0)
	return pack()
}

func method(env []byte) string {
	i := bytes.Index(env, []byte("\x66method"))
	if i < 0 || i+8 > len(env) {
		return ""
	}
	h := env[i+7]
	n, off := int(h&0x1f), i+8
	if h&0xe0 != 0x60 || n > 23 || off+n > len(env) {
		return ""
	}
	return string(env[off : off+n])
}

var sink int
var hoard [][]byte

//go:wasmexport nuropb_handle
func handle(ptr, n int32) int64 {
	env := unsafe.Slice((*byte)(unsafe.Pointer(uintptr(ptr))), n)
	switch method(env) {
	case "echo":
		return reply(env)
	case "panic":
		panic("the guest panics on purpose")
	case "spin":
		for {
			sink++
		}
	case "sleep":
		time.Sleep(200 * time.Millisecond)
		return reply([]byte("slept"))
	case "membomb":
		for {
			hoard = append(hoard, make([]byte, 1<<20))
		}
	}
	return reply([]byte("unknown"))
}
