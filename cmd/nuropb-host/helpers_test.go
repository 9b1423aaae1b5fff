package main

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

// Tests here run real guests: Go packages compiled to wasip1 reactors once
// per source hash into os.UserCacheDir()/nuropb/cmd-test-guests.

func repoRoot(t testing.TB) string {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(wd, "..", "..")
}

func cacheDir(t testing.TB) string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "nuropb")
}

var buildMu sync.Mutex

// guest returns the path of the compiled guest for a repo-relative Go
// package, building it when its sources changed.
func guest(t testing.TB, pkg string) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds WebAssembly guests")
	}
	root := repoRoot(t)
	h := sha256.New()
	h.Write([]byte(runtime.Version()))
	for _, dir := range []string{pkg, "guest-sdk/go", "abi"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			h.Write([]byte(path))
			h.Write(b)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	dir := filepath.Join(cacheDir(t), "cmd-test-guests")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, filepath.Base(pkg)+"-"+hex.EncodeToString(h.Sum(nil))[:16]+".wasm")
	if _, err := os.Stat(out); err == nil {
		return out
	}
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-o", out+".tmp", "./"+pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", pkg, err, b)
	}
	if err := os.Rename(out+".tmp", out); err != nil {
		t.Fatal(err)
	}
	return out
}

// modulesDir returns a fresh modules folder holding the given guests, as
// file name -> repo-relative package.
func modulesDir(t testing.TB, guests map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, pkg := range guests {
		b, err := os.ReadFile(guest(t, pkg))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
