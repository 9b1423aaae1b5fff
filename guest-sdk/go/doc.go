// Package nuropb is the Go SDK for writing nuropb services: typed methods and
// event subscriptions compiled to a WebAssembly reactor that speaks ABI v1.
//
// A service is a package main that builds with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o greeter.wasm .
//
// and registers itself from init (a reactor's _initialize runs package
// initialisation, never main):
//
//	var svc = nuropb.NewService("greeter", "1.2.0", "Greets people.")
//
//	type HelloParams struct {
//		Name string `cbor:"name" nuropb:"required" doc:"who to greet"`
//	}
//
//	func init() {
//		nuropb.Method(svc, "hello", "Says hello.", func(ctx *nuropb.Context, p HelloParams) (string, error) {
//			return "Hello, " + p.Name + "!", nil
//		})
//		nuropb.Register(svc)
//	}
//
//	func main() {}
//
// Nobody writing a service touches pointers or CBOR: params are decoded from
// the envelope into the method's params type (missing required fields, type
// mismatches and unknown names become bad_request naming the param), results
// and events are encoded for you, and the manifest the host reads through
// nuropb_describe is derived from the registrations and the params' struct
// tags (cbor name, nuropb:"required", doc). A handler's error becomes a
// handler error reply, unless it is (or wraps) an *abi.Error, whose code is
// kept. A panic is not recovered: it traps the instance, which the host
// discards and reports as trapped.
//
// # Design notes
//
// The wasm exports and imports live in one small file built only for wasip1;
// everything else is plain Go, so dispatch, param decoding and the manifest
// are unit-tested natively. On the per-call path the envelope skeleton is
// read and the reply written by internal/wire without reflection, into
// buffers reused across calls (the ABI lets a reply live until the next call
// into the instance); only params, results, claims and events go through
// abi.Default, and claims are decoded only if a handler asks for them.
//
// Buffers the host obtains from nuropb_alloc stay referenced by the SDK until
// nuropb_dealloc, so the guest's garbage collector cannot free them under the
// host; freed buffers are kept for reuse. The reply to a call import is also
// written into such a buffer: the SDK releases it itself once decoded.
package nuropb
