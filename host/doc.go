// Package host runs nuropb services compiled to WebAssembly: it loads module
// files per tenant, serves them on a broker, and swaps versions without loss.
//
// Build a Config, check it with Validate, then New, Start, and Shutdown on
// the way out. LoadFile and RemoveFile move one module file through its
// lifecycle (load, validate, serve, drain, close) and are what a folder
// watcher calls for hot reload. Services, Refusals and Ready answer the CLI
// and the gateway. See RATIONALE.md for the decisions behind the design.
package host
