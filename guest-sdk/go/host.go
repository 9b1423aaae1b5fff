package nuropb

import (
	"fmt"
	"os"

	"github.com/nuropb/nuropb/abi"
)

// hostFuncs is the host as the SDK sees it: the three imports of ABI v1. The
// wasip1 build backs it with the real imports; tests back it with fakes.
type hostFuncs interface {
	Log(level abi.LogLevel, msg string)
	// Call sends a request envelope and returns the reply envelope, or nil.
	// A reply in a buffer from the instance's allocator is released by the caller.
	Call(req []byte) []byte
	// Send sends a command or event envelope and returns 0 or an error status.
	Send(msg []byte) int32
}

// fallbackHost serves a build with no host: logs go to standard error and
// every call or send is refused as unavailable.
type fallbackHost struct{}

func (fallbackHost) Log(level abi.LogLevel, msg string) {
	fmt.Fprintf(os.Stderr, "nuropb %d: %s\n", level, msg)
}

func (fallbackHost) Call([]byte) []byte { return nil }

func (fallbackHost) Send([]byte) int32 { return abi.SendStatus(&abi.Error{Code: abi.CodeUnavailable}) }
