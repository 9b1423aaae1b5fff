package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/nuropb/nuropb/guest-sdk/python/pack"
)

const buildUsage = `Usage: nuropb-host build [flags] service.py|package-dir

Packages a Python service (a .py file, a package folder with __init__.py,
or a folder with service.py) into one deployable .wasm: the shared Python
runtime plus the service's code. Syntax errors are reported with file:line.
The runtime is built once by 'make setup' (scripts/build-python-runtime.sh).

Example:
  nuropb-host build modules/examples/python/stats -o modules/stats.wasm`

func buildCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("build", buildUsage, stderr)
	out := fs.String("o", "", "output file (default: <service>.wasm in the current folder)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{"want one service path"}
	}
	src := pos[0]
	if *out == "" {
		*out = strings.TrimSuffix(filepath.Base(filepath.Clean(src)), ".py") + ".wasm"
	}
	wasm, err := pack.Build(src)
	var se *pack.SyntaxError
	switch {
	case errors.As(err, &se):
		return fmt.Errorf("%s", se.Error())
	case errors.Is(err, pack.ErrNoRuntime):
		return fmt.Errorf("%w\n(run 'make setup' once to build the Python runtime)", err)
	case err != nil:
		return err
	}
	// Write then rename, so a host watching the folder never sees half a file.
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".nuropb-build-*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(wasm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "built %s (%d bytes)\n", *out, len(wasm))
	return nil
}
