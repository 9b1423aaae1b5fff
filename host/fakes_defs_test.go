package host

import (
	"context"
	"fmt"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/host/internal/sandbox"
)

// The fake services the host tests use, registered once.
func init() {
	registerFake("greeter", greeterFake("1.0.0", "Hello"))
	registerFake("greeter2", greeterFake("2.0.0", "Hi"))
	registerFake("greeter-renamed", &fakeDef{
		man: abi.Manifest{ABI: 1, Service: "welcomer", Version: "1.0.0", Methods: map[string]abi.Method{"hello": {}}},
		handle: func(ctx context.Context, _ sandbox.Imports, env *abi.Envelope) ([]byte, error) {
			return result(env, "x")
		},
	})
	registerFake("bad-manifest", &fakeDef{man: abi.Manifest{ABI: 1, Service: "Bad Name", Version: "1"}})
	registerFake("orders", &fakeDef{
		man: abi.Manifest{ABI: 1, Service: "orders", Version: "1.0.0", Methods: map[string]abi.Method{
			"create": {Params: []abi.Param{{Name: "item", Type: "string", Required: true}}},
		}},
		handle: func(ctx context.Context, imp sandbox.Imports, env *abi.Envelope) ([]byte, error) {
			var p map[string]any
			_ = abi.Default.Unmarshal(env.Params, &p)
			req, _ := abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindRequest, ID: "g1", Service: "greeter", Method: "hello",
				Params: mustCBOR(map[string]any{"name": p["item"]})})
			reply, err := abi.Default.DecodeEnvelope(imp.Call(ctx, req))
			if err != nil {
				return nil, err
			}
			if reply.Error != nil {
				return abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindResponse, Error: reply.Error})
			}
			var greeting string
			_ = abi.Default.Unmarshal(reply.Result, &greeting)
			ev, _ := abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindEvent, Topic: "order.created",
				Event: mustCBOR(map[string]any{"item": p["item"], "trace": env.TraceID})})
			if err := imp.Send(ctx, ev); err != nil {
				return nil, err
			}
			return result(env, map[string]any{"greeting": greeting, "reply_id": reply.ID, "reply_trace": reply.TraceID})
		},
	})
	registerFake("proxy", &fakeDef{
		// proxy.call forwards to params.target/params.method; proxy.publish
		// publishes params.topic; proxy.command sends to params.target.
		man: abi.Manifest{ABI: 1, Service: "proxy", Version: "1.0.0", Methods: map[string]abi.Method{
			"call": {}, "publish": {}, "command": {}, "recurse": {},
		}},
		handle: func(ctx context.Context, imp sandbox.Imports, env *abi.Envelope) ([]byte, error) {
			var p map[string]any
			_ = abi.Default.Unmarshal(env.Params, &p)
			switch env.Method {
			case "call":
				req, _ := abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindRequest, Service: p["target"].(string),
					Method: p["method"].(string), Tenant: "forged", Depth: -5, Params: mustCBOR(map[string]any{"name": "proxy"})})
				out := imp.Call(ctx, req)
				reply, err := abi.Default.DecodeEnvelope(out)
				if err != nil {
					return nil, err
				}
				if reply.Error != nil {
					return abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindResponse, Error: reply.Error})
				}
				return abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindResponse, Result: reply.Result})
			case "publish", "command":
				e := &abi.Envelope{Kind: abi.KindEvent, Topic: fmt.Sprint(p["topic"]), Event: mustCBOR("ping")}
				if env.Method == "command" {
					e = &abi.Envelope{Kind: abi.KindCommand, Service: fmt.Sprint(p["target"]), Method: "note"}
				}
				ev, _ := abi.Default.EncodeEnvelope(e)
				if err := imp.Send(ctx, ev); err != nil {
					return abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindResponse, Error: abi.AsError(err)})
				}
				return result(env, "sent")
			case "recurse":
				req, _ := abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindRequest, Service: "proxy", Method: "recurse"})
				reply, err := abi.Default.DecodeEnvelope(imp.Call(ctx, req))
				if err != nil {
					return nil, err
				}
				return abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindResponse, Error: reply.Error, Result: reply.Result})
			}
			return nil, abi.Errorf(abi.CodeInternal, "proxy: %s", env.Method)
		},
	})
	registerFake("audit", auditFake())
	registerFake("hostile", &fakeDef{
		man: abi.Manifest{ABI: 1, Service: "hostile", Version: "1.0.0", Methods: map[string]abi.Method{
			"panic": {}, "spin": {}, "garbage": {}, "ok": {}, "slow": {},
		}},
		handle: func(ctx context.Context, _ sandbox.Imports, env *abi.Envelope) ([]byte, error) {
			switch env.Method {
			case "panic":
				return nil, abi.Errorf(abi.CodeTrapped, "hostile.wasm: unreachable executed")
			case "spin":
				<-ctx.Done()
				return nil, abi.Errorf(abi.CodeTimeout, "hostile.wasm: interrupted at the deadline")
			case "garbage":
				return []byte{0xff, 0x00, 0x13}, nil
			case "slow":
				time.Sleep(300 * time.Millisecond)
			}
			return result(env, "ok")
		},
	})
}

// auditEvents receives what the audit fake hears.
var auditEvents = make(chan *abi.Envelope, 100)

func auditFake() *fakeDef {
	return &fakeDef{
		man: abi.Manifest{ABI: 1, Service: "audit", Version: "1.0.0", Subscriptions: []string{"order.*"},
			Methods: map[string]abi.Method{"note": {}}},
		handle: func(ctx context.Context, _ sandbox.Imports, env *abi.Envelope) ([]byte, error) {
			auditEvents <- env
			return abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindResponse})
		},
	}
}

func greeterFake(version, word string) *fakeDef {
	return &fakeDef{
		man: abi.Manifest{ABI: 1, Service: "greeter", Version: version, Description: "says hello", Methods: map[string]abi.Method{
			"hello":  {Params: []abi.Param{{Name: "name", Type: "string", Required: true}, {Name: "times", Type: "int"}}},
			"secret": {Hidden: true},
			"whoami": {RequiresAuth: true},
			"fail":   {},
		}},
		handle: func(ctx context.Context, _ sandbox.Imports, env *abi.Envelope) ([]byte, error) {
			switch env.Method {
			case "hello":
				var p struct {
					Name string `cbor:"name"`
				}
				_ = abi.Default.Unmarshal(env.Params, &p)
				return result(env, word+", "+p.Name)
			case "secret":
				return result(env, "tenant="+env.Tenant)
			case "whoami":
				return result(env, map[string]any{"tenant": env.Tenant, "depth": env.Depth, "served_by": env.ServedBy})
			case "fail":
				return abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindResponse,
					Error: &abi.Error{Code: abi.CodeHandler, Message: "greeter says no"}})
			}
			return nil, abi.Errorf(abi.CodeInternal, "unreachable")
		},
	}
}

func mustCBOR(v any) abi.RawValue {
	b, err := abi.Default.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
