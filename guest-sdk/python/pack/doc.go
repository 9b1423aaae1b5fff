// Package pack turns a Python service (a .py file or a folder) into one
// deployable nuropb .wasm: the shared Python runtime module followed by one
// custom section, "nuropb.fs", whose payload is a zip archive the host
// mounts read-only at "/" in the guest:
//
//	app/<service files>            the service (a module, a package, or a folder with service.py)
//	app/__pycache__/*.pyc          bytecode, when the packing machine's Python is 3.11
//	app/nuropb.entry               the module the runtime imports, one line
//	usr/local/lib/python311.zip    the standard library and the nuropb SDK
//
// The host strips the section before compiling (internal/wasmsection.Split),
// so every Python service built from one runtime shares one compiled module.
//
// The runtime itself (nuropb-python.wasm and python311.zip) is built by
// scripts/build-python-runtime.sh into a cache directory keyed by the hash of
// its recipe; RuntimeDir finds it.
package pack
