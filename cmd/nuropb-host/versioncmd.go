package main

import (
	"fmt"
	"io"
	"runtime"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/internal/buildinfo"
)

// Version is the nuropb-host release; set with -ldflags "-X main.Version=..."
// by the Makefile from git describe.
var Version = "dev"

func versionCmd(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", "Usage: nuropb-host version\n\nExample:\n  nuropb-host version", stderr)
	if _, err := parse(fs, args); err != nil {
		return err
	}
	wazero := buildinfo.WazeroVersion()
	fmt.Fprintf(stdout, "nuropb-host %s (abi v%d, wazero %s, %s %s/%s)\n", Version, abi.Version, wazero, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}
