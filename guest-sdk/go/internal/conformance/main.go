// Command conformance is the Go guest that host tests drive: one method per
// behaviour of ABI v1 a host must get right (echo of every CBOR type, handler
// and coded errors, traps, deadlines, nested calls, publishing, context,
// large replies, memory limits, logs) and a recorded subscription.
//
// Build it with scripts/build-go-modules.sh, or
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o conformance.wasm ./guest-sdk/go/internal/conformance
package main

import (
	"errors"
	"strings"
	"time"

	"github.com/nuropb/nuropb/abi"
	nuropb "github.com/nuropb/nuropb/guest-sdk/go"
)

var svc = nuropb.NewService("conformance", "1.0.0", "Exercises every part of ABI v1 for host tests.")

// MessageParams carry a message.
type MessageParams struct {
	Message string `cbor:"message" doc:"the error or panic text"`
}

// CodeParams choose an error code.
type CodeParams struct {
	Code    string         `cbor:"code" nuropb:"required" doc:"an abi error code, e.g. forbidden"`
	Message string         `cbor:"message" doc:"its message"`
	Details map[string]any `cbor:"details" doc:"its details"`
}

// MsParams give a duration in milliseconds.
type MsParams struct {
	Ms int `cbor:"ms" nuropb:"required" doc:"milliseconds to busy-wait, 0 to 60000"`
}

// CallParams name a method to call and its params.
type CallParams struct {
	Service string       `cbor:"service" nuropb:"required" doc:"service to call"`
	Method  string       `cbor:"method" nuropb:"required" doc:"its method"`
	Params  abi.RawValue `cbor:"params" doc:"a params map, passed on as it is"`
}

// PublishParams give an event.
type PublishParams struct {
	Topic string       `cbor:"topic" nuropb:"required" doc:"a concrete topic"`
	Event abi.RawValue `cbor:"event" doc:"the payload, passed on as it is"`
}

// SizeParams give a size.
type SizeParams struct {
	N int `cbor:"n" nuropb:"required" doc:"size, at least 0"`
}

// AllocParams give a size in MiB.
type AllocParams struct {
	MiB  int  `cbor:"mib" nuropb:"required" doc:"MiB to allocate and touch"`
	Keep bool `cbor:"keep" doc:"keep it referenced after the call"`
}

// LogParams give lines to log.
type LogParams struct {
	Lines []string `cbor:"lines" nuropb:"required" doc:"each is one log call"`
	Level int      `cbor:"level" doc:"slog level: -4 debug, 0 info, 4 warn, 8 error"`
}

// ContextInfo is what context returns.
type ContextInfo struct {
	Context  map[string]any `cbor:"context"`
	TraceID  string         `cbor:"trace_id"`
	Tenant   string         `cbor:"tenant"`
	Deadline int64          `cbor:"deadline"` // unix ms, 0 when none
	Method   string         `cbor:"method"`
}

// Seen is one event recorded by the conformance.# subscription.
type Seen struct {
	Topic   string       `cbor:"topic"`
	Event   abi.RawValue `cbor:"event"`
	TraceID string       `cbor:"trace_id,omitempty"`
}

var (
	seen  []Seen
	hoard [][]byte
	spins uint64
)

func init() {
	nuropb.Method(svc, "echo", "Returns its params map exactly as it came.",
		func(_ *nuropb.Context, p abi.RawValue) (abi.RawValue, error) { return p, nil })
	nuropb.Method(svc, "fail", "Fails with a handler error carrying message.",
		func(_ *nuropb.Context, p MessageParams) (nuropb.NoParams, error) {
			return nuropb.NoParams{}, errors.New(p.Message)
		})
	nuropb.Method(svc, "fail_code", "Fails with an *abi.Error of the given code.",
		func(_ *nuropb.Context, p CodeParams) (nuropb.NoParams, error) {
			return nuropb.NoParams{}, &abi.Error{Code: abi.ErrorCode(p.Code), Message: p.Message, Details: p.Details}
		})
	nuropb.Method(svc, "panic", "Panics: the instance traps.",
		func(_ *nuropb.Context, p MessageParams) (nuropb.NoParams, error) { panic("conformance: " + p.Message) })
	nuropb.Method(svc, "spin", "Loops forever; only the host's deadline ends it.",
		func(*nuropb.Context, nuropb.NoParams) (uint64, error) {
			for {
				spins++
			}
		})
	nuropb.Method(svc, "sleep_ms", "Busy-waits ms milliseconds (no host call), returns the ms it took.",
		func(_ *nuropb.Context, p MsParams) (int64, error) {
			if p.Ms < 0 || p.Ms > 60_000 {
				return 0, abi.Errorf(abi.CodeBadRequest, "ms must be 0 to 60000, got %d", p.Ms)
			}
			start := time.Now()
			for time.Since(start) < time.Duration(p.Ms)*time.Millisecond {
				spins++
			}
			return time.Since(start).Milliseconds(), nil
		})
	nuropb.Method(svc, "call", "Calls service.method with params through the host and returns its result.",
		func(ctx *nuropb.Context, p CallParams) (abi.RawValue, error) {
			var params any
			if len(p.Params) > 0 {
				params = p.Params
			}
			var out abi.RawValue
			if err := ctx.Call(p.Service, p.Method, params, &out); err != nil {
				return nil, err
			}
			return out, nil
		})
	nuropb.Method(svc, "send", "Sends a command to service.method with params through the host.",
		func(ctx *nuropb.Context, p CallParams) (bool, error) {
			var params any
			if len(p.Params) > 0 {
				params = p.Params
			}
			return true, ctx.Send(p.Service, p.Method, params)
		})
	nuropb.Method(svc, "publish", "Publishes event on topic through the host.",
		func(ctx *nuropb.Context, p PublishParams) (bool, error) {
			var ev any
			if len(p.Event) > 0 {
				ev = p.Event
			}
			return true, ctx.Publish(p.Topic, ev)
		})
	nuropb.Method(svc, "context", "Returns the context map, trace id, tenant, deadline and method it received.",
		func(ctx *nuropb.Context, _ nuropb.NoParams) (ContextInfo, error) {
			info := ContextInfo{Context: ctx.Claims(), TraceID: ctx.TraceID(), Tenant: ctx.Tenant(), Method: ctx.Method()}
			if d, ok := ctx.Deadline(); ok {
				info.Deadline = d.UnixMilli()
			}
			return info, nil
		})
	nuropb.Method(svc, "big", "Returns a byte string of n bytes.",
		func(_ *nuropb.Context, p SizeParams) ([]byte, error) {
			if p.N < 0 {
				return nil, abi.Errorf(abi.CodeBadRequest, "n must be at least 0, got %d", p.N)
			}
			b := make([]byte, p.N)
			for i := range b {
				b[i] = byte('a' + i%26)
			}
			return b, nil
		})
	nuropb.Method(svc, "alloc", "Allocates and touches mib MiB (kept if keep), returns the bytes allocated.",
		func(_ *nuropb.Context, p AllocParams) (int, error) {
			if p.MiB < 0 {
				return 0, abi.Errorf(abi.CodeBadRequest, "mib must be at least 0, got %d", p.MiB)
			}
			b := make([]byte, p.MiB<<20)
			for i := 0; i < len(b); i += 4096 {
				b[i] = 1
			}
			if p.Keep {
				hoard = append(hoard, b)
			}
			return len(b), nil
		})
	nuropb.Method(svc, "log", "Logs each line at level through the host.",
		func(ctx *nuropb.Context, p LogParams) (int, error) {
			for _, l := range p.Lines {
				ctx.Log(abi.LogLevel(p.Level), l)
			}
			return len(p.Lines), nil
		})
	nuropb.Method(svc, "events", "Returns the events conformance.# recorded, oldest first.",
		func(*nuropb.Context, nuropb.NoParams) ([]Seen, error) { return append([]Seen{}, seen...), nil })
	nuropb.Method(svc, "hidden", "A hidden method: callable only from inside the tenant.",
		func(*nuropb.Context, nuropb.NoParams) (string, error) { return "hidden", nil }, nuropb.Hidden())
	nuropb.Method(svc, "secure", "A method that requires an authenticated caller.",
		func(ctx *nuropb.Context, _ nuropb.NoParams) (map[string]any, error) { return ctx.Claims(), nil },
		nuropb.RequiresAuth())
	svc.Subscribe("conformance.#", func(ctx *nuropb.Context, ev nuropb.Event) error {
		if len(seen) == 1000 {
			seen = seen[1:]
		}
		seen = append(seen, Seen{Topic: ev.Topic, Event: ev.Raw, TraceID: ctx.TraceID()})
		if strings.HasPrefix(ev.Topic, "conformance.fail") {
			return errors.New("conformance: event handler failed on " + ev.Topic)
		}
		return nil
	})
	nuropb.Register(svc)
}

func main() {}
