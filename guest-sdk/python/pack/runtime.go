package pack

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Names of the runtime's files inside a runtime directory.
const (
	RuntimeWasmName = "nuropb-python.wasm"
	StdlibZipName   = "python311.zip"
	buildScript     = "scripts/build-python-runtime.sh"
)

// ErrNoRuntime is wrapped by RuntimeDir's error when no built runtime is found.
var ErrNoRuntime = errors.New("python runtime not built")

// CacheDir is where scripts/build-python-runtime.sh puts its output:
// $NUROPB_CACHE, else the user cache directory (XDG_CACHE_HOME or ~/.cache)
// plus "nuropb".
func CacheDir() (string, error) {
	if d := os.Getenv("NUROPB_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("pack: no cache directory: %w", err)
	}
	return filepath.Join(d, "nuropb"), nil
}

// RuntimeDir returns the directory holding the built runtime, looking in
// order at:
//  1. $NUROPB_PYTHON_RUNTIME, a directory (e.g. one shipped with a release);
//  2. inside a nuropb clone (found from the working directory up), the
//     cache directory of the clone's exact recipe, python-<hash>: a stale
//     runtime is never used;
//  3. outside a clone, the newest build, CacheDir()/python-latest.
//
// The error wraps ErrNoRuntime and says how to build one.
func RuntimeDir() (string, error) {
	if d := os.Getenv("NUROPB_PYTHON_RUNTIME"); d != "" {
		return d, checkRuntimeDir(d, "$NUROPB_PYTHON_RUNTIME")
	}
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	if root := repoRoot(); root != "" {
		h, err := RecipeHash(root)
		if err != nil {
			return "", err
		}
		d := filepath.Join(cache, "python-"+h)
		return d, checkRuntimeDir(d, "the runtime for this clone's recipe")
	}
	d := filepath.Join(cache, "python-latest")
	return d, checkRuntimeDir(d, "the newest runtime build")
}

func checkRuntimeDir(d, what string) error {
	for _, n := range []string{RuntimeWasmName, StdlibZipName} {
		if _, err := os.Stat(filepath.Join(d, n)); err != nil {
			return fmt.Errorf("%w: %s has no %s (%v); build it with %s", ErrNoRuntime, what, n, err, buildScript)
		}
	}
	return nil
}

// RuntimePath returns the paths of the runtime module and of the stdlib zip.
func RuntimePath() (wasm, stdlib string, err error) {
	d, err := RuntimeDir()
	if err != nil {
		return "", "", err
	}
	return filepath.Join(d, RuntimeWasmName), filepath.Join(d, StdlibZipName), nil
}

// LoadRuntime reads the runtime module and the stdlib zip found by RuntimePath.
func LoadRuntime() (wasm, stdlib []byte, err error) {
	wp, sp, err := RuntimePath()
	if err != nil {
		return nil, nil, err
	}
	if wasm, err = os.ReadFile(wp); err != nil {
		return nil, nil, fmt.Errorf("pack: %w", err)
	}
	if stdlib, err = os.ReadFile(sp); err != nil {
		return nil, nil, fmt.Errorf("pack: %w", err)
	}
	return wasm, stdlib, nil
}

// repoRoot finds a nuropb clone from the working directory upwards.
func repoRoot() string {
	d, err := os.Getwd()
	if err != nil {
		return ""
	}
	for {
		if st, err := os.Stat(filepath.Join(d, buildScript)); err == nil && st.Mode().IsRegular() {
			if _, err := os.Stat(filepath.Join(d, "guest-sdk", "python", "runtime")); err == nil {
				return d
			}
		}
		up := filepath.Dir(d)
		if up == d {
			return ""
		}
		d = up
	}
}

// RecipeHash is the key scripts/build-python-runtime.sh files its output
// under, computed the same way: SHA-256 over "path\nsha256(content)\n" for
// the script, guest-sdk/python/runtime/*.{c,h} and guest-sdk/python/nuropb/*.py,
// sorted by path; the first 16 hex digits.
func RecipeHash(root string) (string, error) {
	files := []string{buildScript}
	for _, g := range []string{"guest-sdk/python/runtime/*.c", "guest-sdk/python/runtime/*.h", "guest-sdk/python/nuropb/*.py"} {
		m, err := filepath.Glob(filepath.Join(root, filepath.FromSlash(g)))
		if err != nil {
			return "", err
		}
		for _, p := range m {
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
				rel, _ := filepath.Rel(root, p)
				files = append(files, filepath.ToSlash(rel))
			}
		}
	}
	sort.Strings(files)
	var sb strings.Builder
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(f)))
		if err != nil {
			return "", fmt.Errorf("pack: recipe hash: %w", err)
		}
		sum := sha256.Sum256(b)
		sb.WriteString(f + "\n" + hex.EncodeToString(sum[:]) + "\n")
	}
	sum := sha256.Sum256([]byte(sb.String()))
	return hex.EncodeToString(sum[:])[:16], nil
}
