// Command nuropb-host runs WebAssembly services on the nuropb mesh, and is
// also the mesh's command-line client.
//
//	nuropb-host run                          serve the modules folder (host.toml)
//	nuropb-host call greeter.hello '{"name":"Ada"}'
//	nuropb-host send orders.cancel '{"id":"o-1"}'
//	nuropb-host publish order.created '{"id":"o-1"}'
//	nuropb-host describe greeter
//	nuropb-host services
//	nuropb-host build service.py -o service.wasm
//	nuropb-host version
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/nuropb/nuropb/abi"
)

// command is one subcommand: its one-line summary, an example shown by
// --help, and the function that runs it with the remaining arguments.
type command struct {
	summary string
	usage   string
	run     func(args []string, stdout, stderr io.Writer) error
}

var commands map[string]command

func init() {
	commands = map[string]command{
		"run":      {"serve the modules folder on the mesh", runUsage, runCmd},
		"call":     {"send a request and print the result", callUsage, callCmd},
		"send":     {"send a command (fire-and-forget)", sendUsage, sendCmd},
		"publish":  {"publish an event on a topic", publishUsage, publishCmd},
		"describe": {"show a service's methods, docs and version", describeUsage, describeCmd},
		"services": {"list the services a host serves", servicesUsage, servicesCmd},
		"build":    {"package a Python service into one .wasm", buildUsage, buildCmd},
		"version":  {"print the version and ABI version", "nuropb-host version", versionCmd},
	}
}

func main() {
	os.Exit(Main(os.Args[1:], os.Stdout, os.Stderr))
}

// exit codes: 0 success, 1 a failed operation (the error says which code),
// 2 bad usage.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// usageError marks an error as the user's invocation being wrong.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// Main runs the CLI and returns the process exit code; tests call it directly.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		printHelp(stdout)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	if args[0] == "--version" || args[0] == "-version" {
		args = append([]string{"version"}, args[1:]...)
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "nuropb-host: unknown command %q\n\n", args[0])
		printHelp(stderr)
		return exitUsage
	}
	err := cmd.run(args[1:], stdout, stderr)
	var ue usageError
	var ae *abi.Error
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "nuropb-host %s: %s\n\n%s\n", args[0], ue.msg, cmd.usage)
		return exitUsage
	case errors.As(err, &ae):
		fmt.Fprintf(stderr, "error: %s: %s\n", ae.Code, ae.Message)
		return exitError
	default:
		fmt.Fprintf(stderr, "nuropb-host %s: %v\n", args[0], err)
		return exitError
	}
}

func printHelp(w io.Writer) {
	fmt.Fprintln(w, "nuropb-host runs WebAssembly services on an event-driven service mesh.")
	fmt.Fprintln(w, "\nUsage: nuropb-host <command> [flags] [args]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'nuropb-host <command> --help' for a command's flags and an example.")
}

// indent prefixes every line of s, for usage text.
func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimSpace(s), "\n", "\n  ")
}
