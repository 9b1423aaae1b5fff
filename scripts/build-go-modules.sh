#!/usr/bin/env bash
# Builds every Go example service into OUTDIR, and the Go conformance guest.
#
#   scripts/build-go-modules.sh OUTDIR [CONFORMANCE_WASM]
#
# Produces OUTDIR/<name>.wasm for each main package under modules/examples/go/
# (<name> is the directory name) and the conformance guest
# (guest-sdk/go/internal/conformance) at CONFORMANCE_WASM, by default
# $NUROPB_CACHE/guests/go-conformance.wasm ($NUROPB_CACHE defaults to
# ~/.cache/nuropb), outside OUTDIR so the host does not serve it.
# Each is a WASI reactor: -buildmode=c-shared, stripped (-s -w keeps the
# wasmexport exports; checked) and built with -trimpath. GO overrides go.
set -euo pipefail

die() { echo "build-go-modules: $*" >&2; exit 1; }

[ $# -ge 1 ] && [ $# -le 2 ] || die "usage: $0 OUTDIR [CONFORMANCE_WASM]"
root=$(cd "$(dirname "$0")/.." && pwd)
go=${GO:-go}
mkdir -p "$1"
out=$(cd "$1" && pwd)
conf=${2:-${NUROPB_CACHE:-$HOME/.cache/nuropb}/guests/go-conformance.wasm}
mkdir -p "$(dirname "$conf")"

build() { # package dir, output file
	(cd "$root" && GOOS=wasip1 GOARCH=wasm "$go" build -buildmode=c-shared -trimpath -ldflags='-s -w' -o "$2" "./$1")
	echo "built $2 ($(wc -c <"$2") bytes)"
}

built=0
for dir in "$root"/modules/examples/go/*/; do
	ls "$dir"*.go >/dev/null 2>&1 || continue
	name=$(basename "$dir")
	build "modules/examples/go/$name" "$out/$name.wasm"
	built=$((built + 1))
done
[ "$built" -gt 0 ] || die "no Go examples found under modules/examples/go"
build guest-sdk/go/internal/conformance "$conf"
