// Package python holds nuropb's Python guest SDK and its tests; there is no
// Go API here. The pieces:
//
//	nuropb/                    the Python SDK (stdlib only), shipped inside the runtime's python311.zip
//	runtime/nuropb_python.c    the C entry point embedding CPython as an ABI v1 reactor
//	pack/                      Go: a .py file or folder -> one deployable .wasm
//	tests/                     the SDK's unit tests, run with the machine's python3
//
// The runtime is built by scripts/build-python-runtime.sh. The tests in this
// package run the SDK's Python unit tests and load packed services with
// wazero, the way the host does. See README.md.
package python
