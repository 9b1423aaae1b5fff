#!/usr/bin/env bash
# Builds the hostile C test guests (testdata/guests/c/*.c) into OUTDIR, one
# OUTDIR/<name>.wasm each, as WASI reactors.
#
#   scripts/build-c-guests.sh OUTDIR
#
# Needs clang with the wasm32-wasi target: Debian's clang, lld, wasi-libc and
# libclang-rt-14-dev-wasm32. CC overrides the compiler. Do not pass
# --sysroot: Debian keeps the headers in /usr/include/wasm32-wasi.
set -euo pipefail

die() { echo "build-c-guests: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
out=$1
root=$(cd "$(dirname "$0")/.." && pwd)
src=$root/testdata/guests/c
cc=${CC:-clang}

command -v "$cc" >/dev/null || die "$cc not found: apt-get install clang lld wasi-libc libclang-rt-14-dev-wasm32"
mkdir -p "$out"
out=$(cd "$out" && pwd)

probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf '#include <stdlib.h>\nint f(void){return (int)(long)malloc(1);}\n' >"$probe/p.c"
"$cc" --target=wasm32-wasi -O2 -mexec-model=reactor -o "$probe/p.wasm" "$probe/p.c" 2>"$probe/err" ||
	die "$cc cannot build wasm32-wasi reactors ($(head -c 300 "$probe/err")): apt-get install lld wasi-libc libclang-rt-14-dev-wasm32"

for f in "$src"/*.c; do
	name=$(basename "$f" .c)
	"$cc" --target=wasm32-wasi -O2 -mexec-model=reactor -Wall -Werror \
		-Wl,-z,stack-size=65536 -Wl,--strip-all \
		-o "$out/$name.wasm" "$f"
	echo "built $out/$name.wasm ($(wc -c <"$out/$name.wasm") bytes)"
done
