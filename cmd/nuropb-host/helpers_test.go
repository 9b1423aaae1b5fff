package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/nuropb/nuropb/internal/testguests"
)

// Tests here run real guests: Go packages compiled to wasip1 reactors once
// per source hash (internal/testguests) into os.UserCacheDir()/nuropb.

func cacheDir(t testing.TB) string { return testguests.CacheRoot(t) }

// modulesDir returns a fresh modules folder holding the given guests, as
// file name -> repo-relative package.
func modulesDir(t testing.TB, guests map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, pkg := range guests {
		if err := os.WriteFile(filepath.Join(dir, name), testguests.GoGuest(t, pkg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
