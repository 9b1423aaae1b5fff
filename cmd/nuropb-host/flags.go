package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// errHelp reports that --help was shown; it is not a failure.
var errHelp = errors.New("help shown")

// newFlags returns a FlagSet whose --help prints usage (with its example)
// and the flags once, and whose parse errors become usage errors.
func newFlags(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	// The flag package calls Usage itself on -h and on bad flags; parse
	// decides what to print instead, so it is printed once.
	fs.Usage = func() {}
	helps[fs] = func() {
		fmt.Fprintln(stderr, usage)
		fmt.Fprintln(stderr, "\nFlags:")
		fs.SetOutput(stderr)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	}
	return fs
}

// helps holds each FlagSet's help printer; the CLI runs one command per
// process, so the map never grows past a few entries.
var helps = map[*flag.FlagSet]func(){}

// parse parses args, allowing flags before, between and after positional
// arguments, turning -h/--help into errHelp and mistakes into usage errors.
// It returns the positional arguments.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var positional []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			helps[fs]()
			return nil, errHelp
		}
		if err != nil {
			return nil, usageError{err.Error()}
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if rest[0] == "--" {
			return append(positional, rest[1:]...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}
