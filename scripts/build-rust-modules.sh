#!/usr/bin/env bash
# Builds the nuropb Rust guest SDK and every Rust example service into OUTDIR.
#
#   scripts/build-rust-modules.sh [--testdata] OUTDIR
#
# Writes one OUTDIR/<name>.wasm per crate under modules/examples/rust/ (each
# a directory with src/lib.rs; <name> is the directory name). --testdata also
# builds the test guests under testdata/guests/rust/ (e.g. conformance), which
# must never be deployed. The SDK rlib goes to a temporary directory, so
# OUTDIR can be the host's modules folder. Uses Debian's /usr/bin/rustc
# directly: rustup's shims come first on PATH and have no wasm32 target.
# RUSTC overrides the compiler path. See /work/shared/TOOLCHAINS.md.
set -euo pipefail

die() { echo "build-rust-modules: $*" >&2; exit 1; }

testdata=false
if [ "${1:-}" = --testdata ]; then
	testdata=true
	shift
fi
[ $# -eq 1 ] || die "usage: $0 [--testdata] OUTDIR"
out=$1
root=$(cd "$(dirname "$0")/.." && pwd)
rustc=${RUSTC:-/usr/bin/rustc}
target=wasm32-wasi

[ -x "$rustc" ] || die "$rustc not found: install Debian's rustc (apt-get install rustc libstd-rust-dev-wasm32 lld)"
sysroot=$("$rustc" --print sysroot)
crt=$sysroot/lib/rustlib/$target/lib/self-contained/crt1-reactor.o
ls "$sysroot/lib/rustlib/$target/lib/"libstd-*.rlib >/dev/null 2>&1 ||
	die "no $target std for $rustc under $sysroot/lib/rustlib/$target: apt-get install libstd-rust-dev-wasm32"
[ -f "$crt" ] || die "$crt is missing: apt-get install libstd-rust-dev-wasm32 (and wasi-libc)"

mkdir -p "$out"
out=$(cd "$out" && pwd)
lib=$(mktemp -d)
trap 'rm -rf "$lib"' EXIT

common=(--edition 2021 --target "$target" -C opt-level=s -C panic=abort -C codegen-units=1)

"$rustc" "${common[@]}" --crate-type rlib --crate-name nuropb \
	"$root/guest-sdk/rust/src/lib.rs" -o "$lib/libnuropb.rlib"

built=0
dirs=("$root"/modules/examples/rust/*/)
if $testdata; then
	dirs+=("$root"/testdata/guests/rust/*/)
fi
for dir in "${dirs[@]}"; do
	[ -f "$dir/src/lib.rs" ] || continue
	name=$(basename "$dir")
	crate=${name//-/_}
	"$rustc" "${common[@]}" --crate-type cdylib --crate-name "$crate" \
		-C strip=symbols -C lto=fat \
		-C link-arg=-zstack-size=65536 \
		-C link-arg="$crt" \
		-C link-arg=--export=_initialize \
		--extern nuropb="$lib/libnuropb.rlib" -L "$lib" \
		"$dir/src/lib.rs" -o "$out/$name.wasm"
	echo "built $out/$name.wasm ($(wc -c <"$out/$name.wasm") bytes)"
	built=$((built + 1))
done
[ "$built" -gt 0 ] || die "no Rust guests found"
