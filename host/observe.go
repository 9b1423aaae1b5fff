package host

import (
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/client"
)

// Observer hears what the host does, for metrics. The host calls it on the
// hot path, from many goroutines at once: methods must be safe for
// concurrent use, cheap, and must never block. The host does not import a
// metrics library; package metrics implements Observer with Prometheus.
type Observer interface {
	// Handled is called once per delivery a service handled: a request
	// answered, a command or event run (or dead-lettered), a malformed
	// message refused.
	Handled(Handled)
	// Loaded is called when a module version starts serving, as a new
	// service or as a hot swap of the previous version.
	Loaded(Loaded)
	// Refused is called when a module file is refused.
	Refused(Refusal)
	// Removed is called when a service stops being served because its file
	// was removed.
	Removed(tenant, service string)
}

// Handled describes one delivery a service handled.
type Handled struct {
	Tenant, Service string
	// Method is the manifest method that ran; "" when the caller named a
	// method the manifest lacks, so that callers cannot mint unbounded
	// metric label values. Events carry their topic in Topic instead.
	Method      string
	Kind        abi.Kind      // request, command or event; "" for an undecodable message
	Code        abi.ErrorCode // "" on success
	Duration    time.Duration // from decode to reply (or ack)
	Redelivered bool          // the broker had delivered it before
	TraceID     string
}

// Loaded describes a version that started serving.
type Loaded struct {
	Tenant, Service, Version, Hash, File string
	// Swap is true when it replaced a previous version (a hot reload).
	Swap bool
}

// nopObserver is the Observer used when Config.Observer is nil.
type nopObserver struct{}

func (nopObserver) Handled(Handled)        {}
func (nopObserver) Loaded(Loaded)          {}
func (nopObserver) Refused(Refusal)        {}
func (nopObserver) Removed(string, string) {}

// observer returns the configured Observer, never nil.
func (h *Host) observer() Observer {
	if h.cfg.Observer != nil {
		return h.cfg.Observer
	}
	return nopObserver{}
}

// handled reports a delivery of env handled by v since start; code is the
// outcome ("" for success).
func (h *Host) handled(v *version, env *abi.Envelope, start time.Time, code abi.ErrorCode, redelivered bool) {
	if h.cfg.Observer == nil {
		return
	}
	ev := Handled{Tenant: v.tenant, Service: v.man.Service, Code: code, Duration: time.Since(start), Redelivered: redelivered}
	if env != nil {
		ev.Kind, ev.TraceID = env.Kind, env.TraceID
		if _, ok := v.man.Methods[env.Method]; ok || env.Method == client.DescribeMethod {
			ev.Method = env.Method
		}
	}
	h.cfg.Observer.Handled(ev)
}

// loaded reports that v started serving, replacing old when not nil.
func (h *Host) loaded(v, old *version) {
	h.observer().Loaded(Loaded{Tenant: v.tenant, Service: v.man.Service, Version: v.man.Version, Hash: v.hash,
		File: v.file, Swap: old != nil})
}

// codeOf is the error code of a response, "" when it succeeded.
func codeOf(reply *abi.Envelope) abi.ErrorCode {
	if reply.Error == nil {
		return ""
	}
	return reply.Error.Code
}
