// Package rustsdk holds the Go-side tests of the Rust guest SDK (the crate
// in this directory) and of the hostile C test guests: they build every Rust
// and C guest with scripts/build-rust-modules.sh and scripts/build-c-guests.sh,
// load them with wazero, and check them against the abi package.
//
// There is no Go API here; the tests skip when the Rust or C wasm toolchain
// is missing, unless CI=true, when they fail.
package rustsdk
