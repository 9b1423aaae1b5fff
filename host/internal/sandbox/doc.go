// Package sandbox runs guest modules: it compiles WebAssembly with wazero,
// checks the ABI, and serves calls from bounded pools of isolated instances.
//
// An Engine loads module versions (Engine.Load) into Modules; a Module's
// Handle runs one envelope on an idle instance under the version's memory,
// time, size and log limits. A guest fault costs only its own instance.
// RATIONALE.md records why it is built this way, with measurements.
package sandbox
