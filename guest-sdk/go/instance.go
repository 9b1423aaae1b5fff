package nuropb

import (
	"errors"
	"fmt"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/guest-sdk/go/internal/wire"
)

// spent is what a Context kept past its handler sees: an empty envelope.
var spent wire.Envelope

// current is the instance Register sets up; the wasm exports serve it.
var current *instance

// Register makes s the service this module provides. Call it once, from
// init, after every Method and Subscribe. It panics if s's manifest is
// invalid or a service is already registered: in a wasm module that traps
// _initialize, so the host refuses the module with the message on stderr.
func Register(s *Service) {
	if current != nil {
		panic(fmt.Sprintf("nuropb: Register(%q) after Register(%q): a module provides one service", s.name, current.svc.name))
	}
	in, err := newInstance(s, defaultHost())
	if err != nil {
		panic(err)
	}
	current = in
}

// instance is the per-module state behind the exports: the service, the host
// functions, and buffers reused from call to call (an instance serves one
// call at a time).
type instance struct {
	svc      *Service
	host     hostFuncs
	mem      allocator
	manifest []byte

	env    wire.Envelope
	ctx    Context
	result []byte // the encoded result of the current call
	errBuf []byte // the encoded error of the current call
	reply  []byte // the reply of the last call, valid until the next one
	call   []byte // outgoing envelopes of Context.Call, Send and Publish
}

func newInstance(s *Service, h hostFuncs) (*instance, error) {
	m, err := s.manifest()
	if err != nil {
		return nil, fmt.Errorf("nuropb: service %q cannot register: %w", s.name, err)
	}
	b, err := abi.Default.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("nuropb: service %q: encode manifest: %w", s.name, err)
	}
	s.registered = true
	return &instance{svc: s, host: h, manifest: b}, nil
}

// replyRoom is what a reply envelope may need besides its result.
const replyRoom = 4 << 10

// handle serves one envelope and returns the reply, valid until the next call.
// A handler's panic is not recovered: in wasm it traps the instance.
func (in *instance) handle(frame []byte) []byte {
	return in.serve(frame, nil)
}

// serve is handle with an error found before parsing (a frame outside any
// buffer from nuropb_alloc, say), which is replied to instead.
func (in *instance) serve(frame []byte, err error) []byte {
	env := &in.env
	resp := wire.Envelope{Kind: []byte(abi.KindResponse)}
	if err == nil {
		err = wire.Parse(frame, limits, env)
	}
	if err == nil {
		err = env.Validate()
	}
	if err == nil {
		resp.ID, resp.TraceID = env.ID, env.TraceID
		in.ctx.reset(in, env)
		in.result = in.result[:0]
		switch abi.Kind(env.Kind) {
		case abi.KindRequest, abi.KindCommand:
			resp.Service, resp.Method = env.Service, env.Method
			if m := in.svc.methods[string(env.Method)]; m != nil {
				in.result, err = m.invoke(&in.ctx, env.Params, in.result)
			} else {
				err = abi.Errorf(abi.CodeMethodNotFound, "service %s has no method %q", in.svc.name, env.Method)
			}
		case abi.KindEvent:
			err = in.event(env)
		default:
			err = abi.Errorf(abi.CodeBadRequest, "a guest is not sent %s envelopes", env.Kind)
		}
		in.ctx.env = &spent
		if err == nil && len(in.result)+replyRoom > limits.MaxFrame {
			err = abi.Errorf(abi.CodeResourceExhausted, "result is %d bytes, over the %d byte limit", len(in.result), limits.MaxFrame-replyRoom)
		}
	}
	if err != nil {
		in.errBuf = wire.AppendError(in.errBuf[:0], replyError(err))
		resp.Error = in.errBuf
	} else if len(in.result) > 0 {
		resp.Result = in.result
	}
	in.reply = wire.AppendEnvelope(in.reply[:0], &resp)
	return in.reply
}

// event runs every subscription matching the event's topic.
func (in *instance) event(env *wire.Envelope) error {
	ev := Event{Topic: string(env.Topic)}
	if len(env.Event) > 0 {
		ev.Raw = append(abi.RawValue(nil), env.Event...)
	}
	matched := false
	var first error
	for _, s := range in.svc.subs {
		if !topicMatches(s.pattern, ev.Topic) {
			continue
		}
		matched = true
		if err := s.h(&in.ctx, ev); err != nil && first == nil {
			first = err
		}
	}
	if !matched {
		return abi.Errorf(abi.CodeMethodNotFound, "service %s has no subscription matching topic %q", in.svc.name, ev.Topic)
	}
	return first
}

// replyError is the error a reply carries for err: an *abi.Error as it is,
// an error wrapping one with that code and err's full text, anything else as
// a handler error with err's text.
func replyError(err error) *abi.Error {
	if e, ok := err.(*abi.Error); ok && e.Code != "" {
		return e
	}
	var e *abi.Error
	if errors.As(err, &e) && e.Code != "" {
		return &abi.Error{Code: e.Code, Message: err.Error(), Details: e.Details}
	}
	return &abi.Error{Code: abi.CodeHandler, Message: err.Error()}
}
