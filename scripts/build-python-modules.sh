#!/usr/bin/env bash
# Packs every Python example under modules/examples/python/ into OUTDIR with
# `nuropb-host build` (the runtime comes from scripts/build-python-runtime.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: build-python-modules.sh OUTDIR}
mkdir -p "$out"
for dir in modules/examples/python/*/; do
	name=$(basename "$dir")
	bin/nuropb-host build "$dir" -o "$out/$name.wasm" >/dev/null
	echo "python: $out/$name.wasm"
done
