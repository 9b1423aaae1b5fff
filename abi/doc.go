// Package abi is the contract between the nuropb host and its guests: the
// envelope and manifest types, the bounded CBOR codec both sides use, and the
// names of the WebAssembly exports and imports of ABI version 1.
//
// It knows nothing of wazero or of brokers, so that guest SDKs written in Go
// can import it as well as the host.
//
// # Exports a guest must provide (ABI v1)
//
//	nuropb_abi_version() -> i32           returns 1
//	nuropb_alloc(size i32) -> i32         a buffer the host writes into
//	nuropb_dealloc(ptr i32, size i32)     releases it
//	nuropb_describe() -> i64              the Manifest, CBOR, as ptr<<32 | len
//	nuropb_handle(ptr i32, len i32) -> i64  an Envelope in, a reply Envelope out
//
// The reply buffer stays valid until the next call into the instance; the
// host copies it at once.
//
// # Imports the host provides (module "nuropb")
//
//	log(level i32, ptr i32, len i32)
//	call(ptr i32, len i32) -> i64   a request Envelope; the reply is written to a
//	                                buffer from nuropb_alloc, returned as ptr<<32 | len
//	send(ptr i32, len i32) -> i32   a command or event Envelope; 0 or an ErrorCode
//
// Every frame, in either direction, is decoded with the same Limits: size is
// checked before decoding, then nesting depth, element counts, duplicate map
// keys and indefinite lengths during it.
package abi
