package host

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/client"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestRoundTripAndDescribe(t *testing.T) {
	e := start(t, Config{}, fakeLoad, map[string]string{"greeter.wasm": "fake:greeter"})
	c := client.New(e.b)
	reply, err := c.Call(ctxT(t, 5*time.Second), &abi.Envelope{Service: "greeter", Method: "hello", Params: params(t, map[string]any{"name": "Ada"})})
	if err != nil {
		t.Fatal(err)
	}
	if got := decodeResult[string](t, reply); got != "Hello, Ada" {
		t.Fatalf("result %q", got)
	}
	if reply.Kind != abi.KindResponse || reply.ServedBy != hashOf([]byte("fake:greeter")) || reply.Tenant != "default" {
		t.Fatalf("reply not stamped: %+v", reply)
	}
	d, err := c.Describe(ctxT(t, 5*time.Second), "greeter")
	if err != nil {
		t.Fatal(err)
	}
	if d.Manifest.Service != "greeter" || d.File != "greeter.wasm" || d.Tenant != "default" || d.LoadedAt.IsZero() {
		t.Fatalf("describe: %+v", d)
	}
	if _, ok := d.Manifest.Methods["secret"]; ok {
		t.Fatal("describe from outside the tenant lists a hidden method")
	}
	svcs := e.h.Services()
	if len(svcs) != 1 || svcs[0].Service != "greeter" || strings.Join(svcs[0].Methods, ",") != "fail,hello,whoami" || svcs[0].Requests != 2 {
		t.Fatalf("Services: %+v", svcs)
	}
	if !e.h.Ready() {
		t.Fatal("not ready after Start")
	}
	if !strings.Contains(e.logs.String(), "module loaded") || !strings.Contains(e.logs.String(), "hash="+short(svcs[0].Hash)) {
		t.Fatalf("no load log line:\n%s", e.logs)
	}
}

func TestDispatcherRules(t *testing.T) {
	e := start(t, Config{}, fakeLoad, map[string]string{"greeter.wasm": "fake:greeter", "hostile.wasm": "fake:hostile"})
	c := client.New(e.b)
	call := func(svc, method string, p any, ctxMap map[string]any) (*abi.Envelope, error) {
		env := &abi.Envelope{Service: svc, Method: method, Context: ctxMap}
		if p != nil {
			env.Params = params(t, p)
		}
		return c.Call(ctxT(t, 10*time.Second), env)
	}
	t.Run("unknown service is not_found at once", func(t *testing.T) {
		start := time.Now()
		_, err := call("nobody", "x", nil, nil)
		wantCode(t, err, abi.CodeNotFound)
		if time.Since(start) > time.Second {
			t.Fatalf("not_found took %s", time.Since(start))
		}
	})
	t.Run("unknown method", func(t *testing.T) {
		_, err := call("greeter", "nope", nil, nil)
		wantCode(t, err, abi.CodeMethodNotFound)
	})
	t.Run("hidden method from outside the tenant", func(t *testing.T) {
		_, err := call("greeter", "secret", nil, nil)
		wantCode(t, err, abi.CodeMethodNotFound)
	})
	t.Run("requires_auth without claims", func(t *testing.T) {
		_, err := call("greeter", "whoami", nil, nil)
		wantCode(t, err, abi.CodeForbidden)
		_, err = call("greeter", "whoami", nil, map[string]any{"claims": map[string]any{}})
		wantCode(t, err, abi.CodeForbidden)
		_, err = call("greeter", "whoami", nil, map[string]any{"token": 42})
		wantCode(t, err, abi.CodeForbidden)
		r, err := call("greeter", "whoami", nil, map[string]any{"claims": map[string]any{"sub": "ada"}})
		if err != nil {
			t.Fatal(err)
		}
		got := decodeResult[map[string]any](t, r)
		if got["tenant"] != "default" || got["served_by"] == "" {
			t.Fatalf("guest did not see stamped fields: %v", got)
		}
	})
	t.Run("bad params name the field", func(t *testing.T) {
		_, err := call("greeter", "hello", map[string]any{}, nil)
		ae := wantCode(t, err, abi.CodeBadRequest)
		if !strings.Contains(ae.Message, `"name"`) || ae.Details["field"] != "name" {
			t.Fatalf("error does not name the field: %+v", ae)
		}
		_, err = call("greeter", "hello", map[string]any{"name": "x", "times": "many"}, nil)
		ae = wantCode(t, err, abi.CodeBadRequest)
		if !strings.Contains(ae.Message, `"times" must be int, got string`) {
			t.Fatalf("error: %v", ae)
		}
		_, err = call("greeter", "hello", []any{1}, nil)
		wantCode(t, err, abi.CodeBadRequest)
	})
	t.Run("service error passes through", func(t *testing.T) {
		_, err := call("greeter", "fail", nil, nil)
		ae := wantCode(t, err, abi.CodeHandler)
		if ae.Message != "greeter says no" {
			t.Fatal(ae)
		}
	})
	t.Run("trap then next call works", func(t *testing.T) {
		_, err := call("hostile", "panic", nil, nil)
		wantCode(t, err, abi.CodeTrapped)
		if _, err := call("hostile", "ok", nil, nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("spin times out at the deadline", func(t *testing.T) {
		ctx := ctxT(t, 300*time.Millisecond)
		start := time.Now()
		_, err := c.Call(ctx, &abi.Envelope{Service: "hostile", Method: "spin"})
		wantCode(t, err, abi.CodeTimeout)
		if el := time.Since(start); el < 250*time.Millisecond || el > 2*time.Second {
			t.Fatalf("timeout after %s", el)
		}
		if _, err := call("hostile", "ok", nil, nil); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("malformed guest reply is internal naming the module", func(t *testing.T) {
		_, err := call("hostile", "garbage", nil, nil)
		ae := wantCode(t, err, abi.CodeInternal)
		if !strings.Contains(ae.Message, "hostile.wasm") {
			t.Fatalf("does not name the module: %v", ae)
		}
	})
	t.Run("describe is answered without the guest", func(t *testing.T) {
		before := e.h.Services()[1].Calls
		if _, err := c.Describe(ctxT(t, 5*time.Second), "hostile"); err != nil {
			t.Fatal(err)
		}
		if after := e.h.Services()[1].Calls; after != before {
			t.Fatalf("describe reached the guest (%d -> %d calls)", before, after)
		}
	})
}

func TestOversizedAndMalformedEnvelopes(t *testing.T) {
	e := start(t, Config{Defaults: Limits{MaxMessageBytes: 4096}}, fakeLoad, map[string]string{"greeter.wasm": "fake:greeter"})
	c := client.New(e.b)
	_, err := c.Call(ctxT(t, 5*time.Second), &abi.Envelope{Service: "greeter", Method: "hello",
		Params: params(t, map[string]any{"name": strings.Repeat("x", 10000)})})
	ae := wantCode(t, err, abi.CodeResourceExhausted)
	if !strings.Contains(ae.Message, "4096") {
		t.Fatalf("does not name the limit: %v", ae)
	}

	// A request whose body is not CBOR: answered with bad_request.
	resp, err := e.b.Request(ctxT(t, 5*time.Second), broker.Route{Tenant: "default", Service: "greeter"},
		broker.Message{Body: []byte("{json?}"), CorrelationID: "c1", Type: "request"})
	if err != nil {
		t.Fatal(err)
	}
	env, err := abi.Default.DecodeEnvelope(resp.Body)
	if err != nil || env.Error == nil || env.Error.Code != abi.CodeBadRequest || env.ID != "c1" {
		t.Fatalf("reply %+v %v", env, err)
	}
	// A command that is not CBOR: nobody to answer, so dead-lettered.
	if err := e.b.Send(ctxT(t, 5*time.Second), broker.Route{Tenant: "default", Service: "greeter"},
		broker.Message{Body: []byte{0xff}, Type: "command"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return len(e.mem.DeadLetters()) == 1 })
	if !strings.Contains(e.logs.String(), "malformed message") {
		t.Fatal("no log line for the malformed message")
	}
}

func TestExpiredRequestIsNotRun(t *testing.T) {
	e := start(t, Config{}, fakeLoad, map[string]string{"hostile.wasm": "fake:hostile"})
	body, _ := abi.Default.EncodeEnvelope(&abi.Envelope{Kind: abi.KindRequest, ID: "late", Service: "hostile", Method: "ok",
		Deadline: time.Now().Add(-time.Second).UnixMilli()})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := e.b.Request(ctx, broker.Route{Tenant: "default", Service: "hostile"}, broker.Message{Body: body, CorrelationID: "late"})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want no reply", err)
	}
	s := e.h.Services()[0]
	if s.Expired != 1 || s.Calls != 0 {
		t.Fatalf("expired %d, calls %d", s.Expired, s.Calls)
	}
}

func TestOrdersGreeterAudit(t *testing.T) {
	e := start(t, Config{}, fakeLoad, map[string]string{
		"greeter.wasm": "fake:greeter", "orders.wasm": "fake:orders", "audit.wasm": "fake:audit"})
	c := client.New(e.b)
	reply, err := c.Call(ctxT(t, 5*time.Second), &abi.Envelope{Service: "orders", Method: "create", TraceID: "trace-1",
		Params: params(t, map[string]any{"item": "book"})})
	if err != nil {
		t.Fatal(err)
	}
	got := decodeResult[map[string]any](t, reply)
	if got["greeting"] != "Hello, book" || got["reply_id"] != "g1" || got["reply_trace"] != "trace-1" {
		t.Fatalf("orders result %v", got)
	}
	select {
	case ev := <-auditEvents:
		if ev.Topic != "order.created" || ev.TraceID != "trace-1" || ev.Tenant != "default" {
			t.Fatalf("audit heard %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("audit never heard order.created")
	}
}

func TestTenantsAndGrants(t *testing.T) {
	cfg := Config{Tenants: map[string]Tenant{
		"shop": {Call: []string{"default/greeter"}},
	}}
	e := start(t, cfg, fakeLoad, map[string]string{
		"greeter.wasm":        "fake:greeter",
		"proxy.wasm":          "fake:proxy", // default tenant: no grants
		"shop/proxy.wasm":     "fake:proxy",
		"shop/audit.wasm":     "fake:audit",
		"Bad Tenant/x.wasm":   "fake:greeter",
		"shop/greeter-2.wasm": "fake:greeter", // same tenant, but shop has no greeter yet: loads
	})
	shop := client.New(e.b, client.WithTenant("shop"))
	def := client.New(e.b)
	callVia := func(c *client.Client, svc string, p map[string]any) (*abi.Envelope, error) {
		return c.Call(ctxT(t, 5*time.Second), &abi.Envelope{Service: svc, Method: "call", Params: params(t, p)})
	}
	// Granted: shop may call default/greeter.
	r, err := callVia(shop, "proxy", map[string]any{"target": "default/greeter", "method": "hello"})
	if err != nil {
		t.Fatal(err)
	}
	if got := decodeResult[string](t, r); got != "Hello, proxy" {
		t.Fatal(got)
	}
	// Hidden method from another tenant: method_not_found, though granted.
	_, err = callVia(shop, "proxy", map[string]any{"target": "default/greeter", "method": "secret"})
	wantCode(t, err, abi.CodeMethodNotFound)
	// Hidden method from its own tenant, with the forged tenant overwritten.
	r, err = callVia(def, "proxy", map[string]any{"target": "greeter", "method": "secret"})
	if err != nil {
		t.Fatal(err)
	}
	if got := decodeResult[string](t, r); got != "tenant=default" {
		t.Fatal(got)
	}
	// Not granted: default may not call shop's services.
	_, err = callVia(def, "proxy", map[string]any{"target": "shop/greeter", "method": "hello"})
	wantCode(t, err, abi.CodeForbidden)
	// Commands follow the same grants.
	r, err = def.Call(ctxT(t, 5*time.Second), &abi.Envelope{Service: "proxy", Method: "command", Params: params(t, map[string]any{"target": "shop/audit"})})
	wantCode(t, err, abi.CodeForbidden)
	_ = r
	// Publishing into another tenant without a grant is forbidden, and a
	// plain topic stays in the publisher's tenant: shop/audit hears nothing.
	_, err = def.Call(ctxT(t, 5*time.Second), &abi.Envelope{Service: "proxy", Method: "publish", Params: params(t, map[string]any{"topic": "shop/order.created"})})
	wantCode(t, err, abi.CodeForbidden)
	if _, err = def.Call(ctxT(t, 5*time.Second), &abi.Envelope{Service: "proxy", Method: "publish", Params: params(t, map[string]any{"topic": "order.created"})}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-auditEvents:
		t.Fatalf("shop/audit heard default's event %+v", ev)
	case <-time.After(200 * time.Millisecond):
	}
	// Inside shop, the event is heard.
	if _, err = shop.Call(ctxT(t, 5*time.Second), &abi.Envelope{Service: "proxy", Method: "publish", Params: params(t, map[string]any{"topic": "order.created"})}); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-auditEvents:
		if ev.Tenant != "shop" {
			t.Fatalf("event %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("shop/audit did not hear shop's event")
	}
	if !strings.Contains(e.logs.String(), "Bad Tenant") {
		t.Fatal("no log line for the bad tenant folder")
	}
	names := map[string]bool{}
	for _, s := range e.h.Services() {
		names[s.Tenant+"/"+s.Service] = true
	}
	if !names["shop/greeter"] || !names["default/proxy"] || len(names) != 5 {
		t.Fatalf("services %v", names)
	}
}

func TestRecursionIsStopped(t *testing.T) {
	e := start(t, Config{Defaults: Limits{MaxCallDepth: 4}}, fakeLoad, map[string]string{"proxy.wasm": "fake:proxy"})
	_, err := client.New(e.b).Call(ctxT(t, 10*time.Second), &abi.Envelope{Service: "proxy", Method: "recurse"})
	ae := wantCode(t, err, abi.CodeResourceExhausted)
	if !strings.Contains(ae.Message, "depth 5") {
		t.Fatal(ae)
	}
}

func TestRefusedFilesDoNotStopOthers(t *testing.T) {
	e := start(t, Config{}, fakeLoad, map[string]string{
		"greeter.wasm":     "fake:greeter",
		"zz-greeter.wasm":  "fake:greeter2", // declares greeter again
		"notwasm.wasm":     "hello, I am text",
		"badmanifest.wasm": "fake:bad-manifest",
		"README.md":        "ignored",
	})
	refs := e.h.Refusals()
	if len(refs) != 3 {
		t.Fatalf("refusals %+v", refs)
	}
	reasons := map[string]string{}
	for _, r := range refs {
		reasons[r.File] = r.Reason
	}
	if !strings.Contains(reasons["zz-greeter.wasm"], "already served by greeter.wasm") ||
		!strings.Contains(reasons["notwasm.wasm"], "compile") ||
		!strings.Contains(reasons["badmanifest.wasm"], "manifest") {
		t.Fatalf("reasons %v", reasons)
	}
	if s := e.h.Services(); len(s) != 1 || s[0].Version != "1.0.0" {
		t.Fatalf("services %+v", s)
	}
	if !strings.Contains(e.logs.String(), "file=notwasm.wasm") {
		t.Fatal("refusal log line does not name the file")
	}
}

func TestSwapUnderLoad(t *testing.T) {
	e := start(t, Config{}, fakeLoad, map[string]string{"greeter.wasm": "fake:greeter", "hostile.wasm": "fake:hostile"})
	c := client.New(e.b)
	path := filepath.Join(e.dir, "greeter.wasm")
	var failures, calls atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	seen := sync.Map{}
	for range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := c.Call(context.Background(), &abi.Envelope{Service: "greeter", Method: "hello", Params: params(t, map[string]any{"name": "x"})})
				calls.Add(1)
				if err != nil {
					failures.Add(1)
					t.Log(err)
					continue
				}
				seen.Store(decodeResult[string](t, r), true)
			}
		})
	}
	ctx := ctxT(t, 30*time.Second)
	for i := range 6 {
		time.Sleep(30 * time.Millisecond)
		content := "fake:greeter2"
		if i%2 == 1 {
			content = "fake:greeter"
		}
		writeFile(t, path, content)
		if err := e.h.LoadFile(ctx, path); err != nil {
			t.Fatal(err)
		}
	}
	// Same content again: a no-op.
	if err := e.h.LoadFile(ctx, path); err != nil {
		t.Fatal(err)
	}
	time.Sleep(30 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failures.Load() != 0 || calls.Load() < 10 {
		t.Fatalf("%d of %d calls failed", failures.Load(), calls.Load())
	}
	_, a := seen.Load("Hello, x")
	_, b := seen.Load("Hi, x")
	if !a || !b {
		t.Fatal("both versions should have answered")
	}

	// A refused new version leaves the old one serving.
	writeFile(t, path, "garbage")
	var ref *Refusal
	if err := e.h.LoadFile(ctx, path); !errors.As(err, &ref) {
		t.Fatalf("got %v, want a refusal", err)
	}
	// A new version that renames the service is refused.
	writeFile(t, path, "fake:greeter-renamed")
	if err := e.h.LoadFile(ctx, path); !errors.As(err, &ref) || !strings.Contains(ref.Reason, `declares service "welcomer"`) {
		t.Fatalf("got %v, want a rename refusal", err)
	}
	if _, err := c.Call(ctx, &abi.Envelope{Service: "greeter", Method: "hello", Params: params(t, map[string]any{"name": "x"})}); err != nil {
		t.Fatal(err)
	}
	if len(e.h.Refusals()) != 2 {
		t.Fatalf("refusals %+v", e.h.Refusals())
	}
}

func TestRemoveFile(t *testing.T) {
	e := start(t, Config{}, fakeLoad, map[string]string{"greeter.wasm": "fake:greeter"})
	c := client.New(e.b)
	if err := e.h.RemoveFile(ctxT(t, 5*time.Second), filepath.Join(e.dir, "greeter.wasm")); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := c.Call(ctxT(t, 5*time.Second), &abi.Envelope{Service: "greeter", Method: "hello", Params: params(t, map[string]any{"name": "x"})})
	wantCode(t, err, abi.CodeNotFound)
	if time.Since(start) > time.Second {
		t.Fatal("not_found was not immediate")
	}
	if len(e.h.Services()) != 0 {
		t.Fatal("still listed")
	}
	// And it can come back.
	if err := e.h.LoadFile(ctxT(t, 5*time.Second), filepath.Join(e.dir, "greeter.wasm")); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Call(ctxT(t, 5*time.Second), &abi.Envelope{Service: "greeter", Method: "hello", Params: params(t, map[string]any{"name": "x"})}); err != nil {
		t.Fatal(err)
	}
}

func TestShutdownDrainsInFlight(t *testing.T) {
	e := start(t, Config{}, fakeLoad, map[string]string{"hostile.wasm": "fake:hostile"})
	c := client.New(e.b)
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			_, err := c.Call(context.Background(), &abi.Envelope{Service: "hostile", Method: "slow"})
			errs <- err
		}()
	}
	waitFor(t, func() bool { return e.h.Services()[0].Busy == 4 })
	if err := e.h.Shutdown(ctxT(t, 5*time.Second)); err != nil {
		t.Fatal(err)
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Fatalf("in-flight call lost: %v", err)
		}
	}
	if e.h.Ready() {
		t.Fatal("ready after shutdown")
	}
	if err := e.h.LoadFile(context.Background(), filepath.Join(e.dir, "hostile.wasm")); !errors.Is(err, ErrClosed) {
		t.Fatalf("LoadFile after Shutdown: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
