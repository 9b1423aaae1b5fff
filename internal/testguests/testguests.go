// Package testguests builds the WebAssembly guests that tests run against
// the sandbox and the host: the project's hostile C guests, the Rust
// conformance guest and Go packages, with the project's own build scripts. Each is built
// once per source hash into the user's cache directory, so repeated runs
// (and -race) do not rebuild them. Only tests import it.
package testguests

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
)

var (
	mu    sync.Mutex
	built = map[string][]byte{}
)

// CacheRoot is os.UserCacheDir()/nuropb (or the temp dir's), shared with the
// build scripts' default NUROPB_CACHE.
func CacheRoot(t testing.TB) string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "nuropb")
}

// RepoRoot finds the module root by walking up from the working directory
// (a test runs in its package's folder) to go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("testguests: no go.mod above the working directory")
		}
		dir = parent
	}
}

// Key names a build: name plus a hash of the files' contents (not their
// paths, so a cache survives moving the repo) and extra strings such as
// compiler flags.
func Key(t testing.TB, name string, files []string, extra ...string) string {
	t.Helper()
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		h.Write(b)
	}
	for _, e := range extra {
		h.Write([]byte{0})
		h.Write([]byte(e))
	}
	return name + "-" + hex.EncodeToString(h.Sum(nil))[:16]
}

// Build returns the module cached under key, running build (which writes
// the module to its argument) when it is missing. Builds are serialized:
// they are CPU-heavy and the machine is small.
func Build(t testing.TB, key string, build func(out string) *exec.Cmd) []byte {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if b, ok := built[key]; ok {
		return b
	}
	dir := filepath.Join(CacheRoot(t), "test-guests")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, key+".wasm")
	if b, err := os.ReadFile(path); err == nil {
		built[key] = b
		return b
	}
	// Write then rename, so a build killed half-way never looks cached.
	tmp := path + ".tmp"
	cmd := build(tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building test guest %s: %v\n%s\n%s", key, err, strings.Join(cmd.Args, " "), out)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	built[key] = b
	return b
}

// HostileC returns the hostile C guest name (testdata/guests/c/<name>.c,
// see its README), built with scripts/build-c-guests.sh. It skips the test
// when clang is missing.
func HostileC(t testing.TB, name string) []byte {
	t.Helper()
	root := RepoRoot(t)
	script := filepath.Join(root, "scripts", "build-c-guests.sh")
	if _, err := os.Stat(script); err != nil {
		t.Skip("no scripts/build-c-guests.sh")
	}
	if _, err := exec.LookPath("clang"); err != nil {
		t.Skip("clang not installed")
	}
	files, _ := filepath.Glob(filepath.Join(root, "testdata", "guests", "c", "*"))
	files = append(files, script)
	key := Key(t, "hostile-c", files)
	// The script builds every guest at once into a folder; the cache entry
	// for key is only a marker that the folder is complete.
	dir := filepath.Join(CacheRoot(t), "test-guests", key)
	Build(t, key, func(out string) *exec.Cmd {
		return exec.Command("sh", "-c", `rm -rf "$1" && "$0" "$1" >/dev/null && touch "$2"`, script, dir, out)
	})
	b, err := os.ReadFile(filepath.Join(dir, name+".wasm"))
	if err != nil {
		t.Fatalf("hostile C guest %q: %v", name, err)
	}
	return b
}

// RustConformance returns the Rust conformance guest
// (testdata/guests/rust/conformance), built with
// scripts/build-rust-modules.sh --testdata. It skips the test when Debian's
// rustc is not installed.
func RustConformance(t testing.TB) []byte {
	t.Helper()
	root := RepoRoot(t)
	script := filepath.Join(root, "scripts", "build-rust-modules.sh")
	if _, err := os.Stat(script); err != nil {
		t.Skip("no scripts/build-rust-modules.sh")
	}
	if _, err := os.Stat("/usr/bin/rustc"); err != nil {
		t.Skip("Debian's rustc is not installed")
	}
	var files []string
	for _, glob := range []string{"scripts/build-rust-modules.sh", "guest-sdk/rust/src/*.rs", "testdata/guests/rust/conformance/src/*.rs"} {
		m, _ := filepath.Glob(filepath.Join(root, glob))
		files = append(files, m...)
	}
	key := Key(t, "rust-conformance", files)
	return Build(t, key, func(out string) *exec.Cmd {
		dir := out + ".d"
		return exec.Command("sh", "-c", `"$0" --testdata "$1" >/dev/null && mv "$1/conformance.wasm" "$2" && rm -rf "$1"`, script, dir, out)
	})
}

// Files lists the files under the repo-relative paths (folders or files),
// leaving out Go tests, for Key.
func Files(t testing.TB, paths ...string) []string {
	t.Helper()
	root := RepoRoot(t)
	var files []string
	for _, p := range paths {
		err := filepath.WalkDir(filepath.Join(root, p), func(path string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() && !strings.HasSuffix(path, "_test.go") {
				files = append(files, path)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return files
}

// GoGuest returns the Go package pkg (repo-relative) built as a wasip1
// reactor, keyed by its sources, the Go SDK's, abi's and the Go version.
func GoGuest(t testing.TB, pkg string) []byte {
	t.Helper()
	if testing.Short() {
		t.Skip("builds WebAssembly guests")
	}
	key := Key(t, "go-"+filepath.Base(pkg), Files(t, pkg, "guest-sdk/go", "abi"), runtime.Version(), pkg)
	return Build(t, key, func(out string) *exec.Cmd {
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-o", out, "./"+pkg)
		cmd.Dir = RepoRoot(t)
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		return cmd
	})
}
