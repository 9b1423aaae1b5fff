// Package wasmsection reads, adds and strips custom sections of WebAssembly
// binaries, and serves the nuropb.fs section as a read-only file system.
//
// A Python service ships as one .wasm: the shared Python runtime module plus
// one custom section named "nuropb.fs" (FSSection) whose payload is a zip
// archive. The host splits the two (Split): it compiles the stripped bytes,
// which are identical for every Python service built from the same runtime,
// so one compilation serves them all; and it mounts the archive (ZipFS)
// read-only at "/" in the guest. Custom sections do not change a module's
// semantics, so an unstripped file is still a valid module.
package wasmsection
