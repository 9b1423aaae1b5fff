#!/usr/bin/env bash
# Installs what building and testing nuropb needs beyond Go: the Rust and C
# toolchains for wasm32-wasi (Debian packages), RabbitMQ's availability check
# is left to the tests, and the Python runtime, built once into the cache.
# Safe to run again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(rustc cargo libstd-rust-dev-wasm32 lld clang wasi-libc libclang-rt-14-dev-wasm32 wabt chromium)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup: installing ${missing[*]}"
	sudo=""
	[ "$(id -u)" = 0 ] || sudo="sudo"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ -x scripts/build-python-runtime.sh ]; then
	scripts/build-python-runtime.sh
fi
