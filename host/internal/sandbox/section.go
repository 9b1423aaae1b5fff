package sandbox

import (
	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/internal/wasmsection"
)

// splitFS separates a module file into the code to compile and the payload
// of its nuropb.fs section (nil without one): a zip archive mounted
// read-only at / (Python services: the interpreter's stdlib and the
// service's own sources). The code of every Python service built from one
// runtime is the same, so they share one compilation.
//
// Bytes that are not a well-formed sequence of sections are returned as
// they are, to be compiled: the compiler's message says what is wrong with
// them better than the section walker's. Two nuropb.fs sections are refused,
// so that what runs cannot depend on which one a reader picks.
func splitFS(wasm []byte) (code, payload []byte, err error) {
	if _, err := wasmsection.Parse(wasm); err != nil {
		return wasm, nil, nil
	}
	return wasmsection.Split(wasm, wasmsection.FSSection)
}

// startError reports a guest that could not start its service: instead of
// a manifest, nuropb_describe returned {"error": {code, message}} (the
// Python runtime does this when the service fails to import, with the
// traceback as the message). Without this check the host would refuse the
// module for an empty manifest and the traceback would be lost.
func startError(codec *abi.Codec, manifest []byte) *abi.Error {
	var probe struct {
		Error *abi.Error `cbor:"error"`
	}
	if err := codec.Unmarshal(manifest, &probe); err != nil || probe.Error == nil {
		return nil // a manifest, or garbage the manifest decode will name
	}
	e := probe.Error
	if e.Code == "" {
		e.Code = abi.CodeInternal
	}
	if e.Message == "" {
		e.Message = "no message"
	}
	return e
}
