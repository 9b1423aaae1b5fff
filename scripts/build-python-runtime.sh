#!/usr/bin/env bash
# build-python-runtime.sh builds nuropb's Python runtime: CPython 3.11 for
# wasm32-wasi (from Debian's source package, with Debian's patches) embedded
# as a reactor behind nuropb's ABI v1, plus the standard library zip that
# also carries the nuropb Python SDK.
#
# Output (outside the clone, keyed by a hash of the recipe):
#   ${NUROPB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nuropb}/python-<hash>/
#     nuropb-python.wasm   the runtime module (ABI v1 reactor)
#     python311.zip        stdlib + nuropb SDK, bytecode
#     BUILDINFO            versions and the recipe hash
# The recipe is this script, guest-sdk/python/runtime/* and the SDK sources
# guest-sdk/python/nuropb/*.py; change any of them and the next run builds a
# new python-<hash>/. Unchanged, a run only prints the path. CPython itself is
# rebuilt only when its own configure recipe (CPYTHON_RECIPE below) changes.
#
# Usage: scripts/build-python-runtime.sh [--print-dir]
#   --print-dir  print the output directory for the current recipe and exit
# Env:   NUROPB_CACHE (cache root), JOBS (make -j, default 2)
set -euo pipefail

die() { echo "build-python-runtime: error: $*" >&2; exit 1; }
say() { echo "build-python-runtime: $*" >&2; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${NUROPB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nuropb}
JOBS=${JOBS:-2}

# recipe_files lists the files whose content keys the output, repo-relative.
# pack.RuntimeDir (guest-sdk/python/pack) computes the same hash: keep the
# two in step.
recipe_files() {
	(cd "$ROOT" && {
		echo scripts/build-python-runtime.sh
		find guest-sdk/python/runtime -maxdepth 1 -type f \( -name '*.c' -o -name '*.h' \)
		find guest-sdk/python/nuropb -maxdepth 1 -type f -name '*.py'
	} | LC_ALL=C sort)
}

# recipe_hash: sha256 over "path\nsha256(content)\n" for each recipe file, first 16 hex digits.
recipe_hash() {
	local f
	for f in $(recipe_files); do
		printf '%s\n%s\n' "$f" "$(sha256sum <"$ROOT/$f" | cut -d' ' -f1)"
	done | sha256sum | cut -c1-16
}

HASH=$(recipe_hash)
OUT="$CACHE/python-$HASH"
if [[ "${1:-}" == "--print-dir" ]]; then
	echo "$OUT"
	exit 0
fi
if [[ -f "$OUT/nuropb-python.wasm" && -f "$OUT/python311.zip" ]]; then
	ln -sfn "python-$HASH" "$CACHE/python-latest"
	say "up to date: $OUT"
	echo "$OUT"
	exit 0
fi

START=$(date +%s)
WORK="$CACHE/python-build"
mkdir -p "$WORK"

SUDO=""
if [[ $EUID -ne 0 ]]; then
	command -v sudo >/dev/null || die "not root and no sudo: cannot apt-get install the toolchain"
	SUDO=sudo
fi

# --- 1. toolchain and sources from Debian -----------------------------------
PKGS=(clang-16 lld-16 llvm-16 wasi-libc libclang-rt-16-dev-wasm32 python3.11 make dpkg-dev bzip2 zip)
missing=()
for p in "${PKGS[@]}"; do
	[[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == "install ok installed" ]] || missing+=("$p")
done

# (No `| grep -q` here: with pipefail, grep quitting early fails the pipe.)
have_deb_src() { [[ "$(apt-cache showsrc python3.11 2>/dev/null)" == *"Package: python3.11"* ]]; }

need_sources=0
[[ -f "$WORK/sources.stamp" ]] || need_sources=1

if ((${#missing[@]} > 0 || need_sources)); then
	command -v apt-get >/dev/null || die "apt-get not found: this recipe needs Debian (bookworm)"
	if ((need_sources)) && ! have_deb_src; then
		say "adding deb-src entries (same URIs as the existing deb entries)"
		srcfile=/etc/apt/sources.list.d/nuropb-deb-src.sources
		tmp=$(mktemp)
		for f in /etc/apt/sources.list.d/*.sources; do
			[[ -f "$f" && "$f" != "$srcfile" ]] || continue
			# Only Debian's main archive (bookworm, bookworm-updates): other vendors' repos have
			# no sources, and the security archive's source pool is not mirrored everywhere.
			awk 'BEGIN{RS=""; ORS="\n\n"} /URIs:[^\n]*debian\.org\/debian[ \t]*\n/ { sub(/Types: deb\n/, "Types: deb-src\n"); print }' "$f" >>"$tmp"
		done
		if [[ -f /etc/apt/sources.list ]]; then
			grep -E '^deb [^#]*debian\.org/debian/? ' /etc/apt/sources.list | sed 's/^deb /deb-src /' \
				>/tmp/nuropb-deb-src.list || true
			if [[ -s /tmp/nuropb-deb-src.list ]]; then
				$SUDO cp /tmp/nuropb-deb-src.list /etc/apt/sources.list.d/nuropb-deb-src.list
			fi
			rm -f /tmp/nuropb-deb-src.list
		fi
		if [[ -s "$tmp" ]]; then
			$SUDO cp "$tmp" "$srcfile"
			$SUDO chmod 644 "$srcfile"
		fi
		rm -f "$tmp"
		$SUDO apt-get update -q || die "apt-get update failed"
		have_deb_src || die "no deb-src entry for python3.11 after adding one; check /etc/apt/sources.list.d/nuropb-deb-src.*"
	elif ((${#missing[@]} > 0)); then
		$SUDO apt-get update -q || die "apt-get update failed"
	fi
	if ((${#missing[@]} > 0)); then
		say "installing: ${missing[*]}"
		$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" \
			|| die "apt-get install ${missing[*]} failed"
	fi
fi
for t in clang-16 clang-cpp-16 wasm-ld-16 llvm-ar-16 llvm-ranlib-16 python3.11 dpkg-source zip; do
	command -v "$t" >/dev/null || die "$t not found after installing the toolchain"
done
[[ -f /usr/lib/llvm-16/lib/clang/16/lib/wasi/libclang_rt.builtins-wasm32.a ]] \
	|| die "libclang_rt builtins for wasm32 missing (package libclang-rt-16-dev-wasm32)"
[[ -f /usr/lib/wasm32-wasi/libc.a ]] || die "wasi-libc missing (package wasi-libc)"
BUILD_PY=/usr/bin/python3.11

if ((need_sources)); then
	say "fetching Debian sources: python3.11 zlib"
	rm -rf "$WORK/src"
	mkdir -p "$WORK/src"
	(cd "$WORK/src" && apt-get source --download-only python3.11 zlib) || die "apt-get source python3.11 zlib failed"
	(cd "$WORK/src" && for d in python3.11_*.dsc zlib_*.dsc; do dpkg-source --no-check -x "$d"; done) \
		|| die "dpkg-source -x failed"
	touch "$WORK/sources.stamp"
fi
PYSRC=$(find "$WORK/src" -maxdepth 1 -type d -name 'python3.11-*' | head -1)
ZSRC=$(find "$WORK/src" -maxdepth 1 -type d -name 'zlib-*' | head -1)
[[ -n "$PYSRC" && -f "$PYSRC/configure" ]] || die "unpacked python3.11 source not found under $WORK/src (delete $WORK to refetch)"
[[ -n "$ZSRC" && -f "$ZSRC/configure" ]] || die "unpacked zlib source not found under $WORK/src (delete $WORK to refetch)"
PYVER=$(basename "$WORK/src"/python3.11_*.dsc .dsc)
ZVER=$(basename "$WORK/src"/zlib_*.dsc .dsc)

# --- 2. zlib for wasi ------------------------------------------------------
ZOUT="$WORK/zlib-wasi"
if [[ ! -f "$ZOUT/lib/libz.a" ]]; then
	say "building zlib for wasm32-wasi ($ZVER)"
	rm -rf "$WORK/zlib-build" && cp -a "$ZSRC" "$WORK/zlib-build"
	(cd "$WORK/zlib-build" &&
		CC="clang-16 --target=wasm32-wasi" AR=llvm-ar-16 RANLIB=llvm-ranlib-16 CHOST=wasm32 CFLAGS=-O2 \
			./configure --static --prefix="$ZOUT" >build.log 2>&1 &&
		make -j"$JOBS" libz.a >>build.log 2>&1) || die "zlib build failed (log: $WORK/zlib-build/build.log)"
	mkdir -p "$ZOUT/lib" "$ZOUT/include"
	cp "$WORK/zlib-build/libz.a" "$ZOUT/lib/"
	cp "$WORK/zlib-build/zlib.h" "$WORK/zlib-build/zconf.h" "$ZOUT/include/"
fi

# --- 3. CPython for wasm32-wasi --------------------------------------------
CPY_CFLAGS="-Wno-error=int-conversion -Wno-error=incompatible-function-pointer-types"
CPYTHON_RECIPE="v1 $PYVER $ZVER clang-16 cflags=[$CPY_CFLAGS] config.site-wasm32-wasi prefix=/usr/local"
CPY_STAMP=$(printf '%s' "$CPYTHON_RECIPE" | sha256sum | cut -c1-16)
B="$PYSRC/builddir/wasi"
if [[ "$(cat "$B/nuropb.stamp" 2>/dev/null)" != "$CPY_STAMP" ]]; then
	say "building CPython for wasm32-wasi ($PYVER, make -j$JOBS; a few minutes)"
	rm -rf "$B" && mkdir -p "$B"
	(
		cd "$B"
		export CC="clang-16 --target=wasm32-wasi" CPP="clang-cpp-16 --target=wasm32-wasi"
		export AR=llvm-ar-16 RANLIB=llvm-ranlib-16 LDSHARED=wasm-ld-16 PKG_CONFIG_LIBDIR=/nonexistent
		export ZLIB_CFLAGS="-I$ZOUT/include" ZLIB_LIBS="-L$ZOUT/lib -lz"
		export CONFIG_SITE=../../Tools/wasm/config.site-wasm32-wasi
		export CFLAGS="$CPY_CFLAGS"
		../../configure -C --host=wasm32-unknown-wasi --build="$(../../config.guess)" \
			--with-build-python="$BUILD_PY" --prefix=/usr/local >configure.log 2>&1 \
			|| { tail -30 configure.log >&2; exit 1; }
		make -j"$JOBS" >make.log 2>&1 || { tail -40 make.log >&2; exit 1; }
		make wasm_stdlib >>make.log 2>&1 || { tail -40 make.log >&2; exit 1; }
	) || die "CPython build failed (logs: $B/configure.log, $B/make.log)"
	echo "$CPY_STAMP" >"$B/nuropb.stamp"
fi
for f in libpython3.11.a Modules/_decimal/libmpdec/libmpdec.a Modules/expat/libexpat.a pyconfig.h usr/local/lib/python311.zip; do
	[[ -e "$B/$f" ]] || die "CPython build output $B/$f missing (delete $B to rebuild)"
done

# --- 4. the nuropb reactor and the stdlib+SDK zip ---------------------------
say "linking the nuropb reactor"
TMP=$(mktemp -d "$CACHE/python-$HASH.tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
RT="$ROOT/guest-sdk/python/runtime"
[[ -f "$RT/nuropb_python.c" ]] || die "$RT/nuropb_python.c missing"
clang-16 --target=wasm32-wasi -O2 -Wall -Werror=implicit-function-declaration \
	-I"$PYSRC/Include" -I"$PYSRC/Include/internal" -I"$B" -D_WASI_EMULATED_SIGNAL \
	-c "$RT/nuropb_python.c" -o "$TMP/nuropb_python.o" || die "compiling $RT/nuropb_python.c failed"
clang-16 --target=wasm32-wasi -mexec-model=reactor -O2 \
	-z stack-size=524288 -Wl,--stack-first -Wl,--initial-memory=10485760 -Wl,--strip-all \
	-o "$TMP/nuropb-python.wasm" "$TMP/nuropb_python.o" \
	"$B/libpython3.11.a" "$B/Modules/_decimal/libmpdec/libmpdec.a" "$B/Modules/expat/libexpat.a" \
	"$ZOUT/lib/libz.a" -lwasi-emulated-signal -lwasi-emulated-getpid -lwasi-emulated-process-clocks -lm \
	|| die "linking nuropb-python.wasm failed"

say "assembling python311.zip (stdlib + nuropb SDK)"
cp "$B/usr/local/lib/python311.zip" "$TMP/python311.zip"
"$BUILD_PY" - "$TMP/python311.zip" "$ROOT/guest-sdk/python/nuropb" <<'PY' || die "adding the SDK to python311.zip failed"
import os, py_compile, sys, tempfile, zipfile
zpath, sdk = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(zpath, "a", zipfile.ZIP_DEFLATED) as z:
    names = set(z.namelist())
    for fn in sorted(os.listdir(sdk)):
        if not fn.endswith(".py") or fn.startswith("test_"):
            continue
        arc = "nuropb/" + fn[:-3] + ".pyc"
        if arc in names:
            sys.exit(f"{arc} already in the stdlib zip")
        with tempfile.TemporaryDirectory() as td:
            out = os.path.join(td, "x.pyc")
            # Unchecked-hash pycs: no source in the zip, no mtime to compare.
            py_compile.compile(os.path.join(sdk, fn), cfile=out, dfile="nuropb/" + fn, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
            z.write(out, arc)
PY

cat >"$TMP/BUILDINFO" <<INFO
recipe_hash=$HASH
python_source=$PYVER
zlib_source=$ZVER
cpython_recipe=$CPYTHON_RECIPE
built=$(date -u +%Y-%m-%dT%H:%M:%SZ)
INFO
[[ "$(recipe_hash)" == "$HASH" ]] || die "the recipe changed while building (SDK or runtime sources edited?): run again"
rm -rf "$OUT"
mv "$TMP" "$OUT"
trap - EXIT
chmod 755 "$OUT"
# python-latest points at the newest build, for tools running outside a clone
# (pack.RuntimeDir prefers the exact recipe hash when it finds the clone).
ln -sfn "python-$HASH" "$CACHE/python-latest"
say "built in $(( $(date +%s) - START )) s: $OUT ($(stat -c %s "$OUT/nuropb-python.wasm") byte runtime, $(stat -c %s "$OUT/python311.zip") byte stdlib zip)"
echo "$OUT"
