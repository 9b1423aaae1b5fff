package host

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	amqp091 "github.com/rabbitmq/amqp091-go"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/broker/amqp"
	"github.com/nuropb/nuropb/broker/amqp/amqptest"
	"github.com/nuropb/nuropb/client"
	"github.com/nuropb/nuropb/internal/rawamqp"
)

// Hosts on real RabbitMQ with real compiled guests. Every test gets its own
// vhost (amqptest.Vhost: skipped without RabbitMQ, failed when CI=true);
// hosts in one test share one modules folder, like hosts on many machines
// deployed from the same build, and each has its own connection.

// mesh is one vhost and one modules folder that hosts share.
type mesh struct {
	url, vhost string
	dir        string
}

func newMesh(t testing.TB, files map[string][]byte) *mesh {
	t.Helper()
	url, vhost := amqptest.Vhost(t)
	m := &mesh{url: url, vhost: vhost, dir: t.TempDir()}
	for name, b := range files {
		writeFile(t, filepath.Join(m.dir, name), string(b))
	}
	return m
}

// broker opens a RabbitMQ connection that reconnects fast, as tests need.
func (m *mesh) broker(t testing.TB, log *slog.Logger) *amqp.Broker {
	t.Helper()
	if log == nil {
		log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	b, err := amqp.New(ctx, amqp.Config{URL: m.url, ReconnectMin: 50 * time.Millisecond, ReconnectMax: time.Second,
		CloseTimeout: 5 * time.Second, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func (m *mesh) client(t testing.TB) *client.Client { return client.New(m.broker(t, nil)) }

// meshHost is one host of the mesh with its own broker connection.
type meshHost struct {
	*Host
	b    *amqp.Broker
	logs *logBuffer
}

func (m *mesh) host(t testing.TB, cfg Config) *meshHost {
	t.Helper()
	logs := &logBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	b := m.broker(t, log)
	cfg.ModulesDir = m.dir
	cfg.CacheDir = filepath.Join(cacheRoot(t), "wazero-cache")
	cfg.Logger = log
	h, err := New(cfg, b)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := h.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = h.Shutdown(ctx)
		if t.Failed() {
			t.Logf("host log:\n%s", logs.String())
		}
	})
	return &meshHost{Host: h, b: b, logs: logs}
}

// requests is how many requests this host answered for service.
func (h *meshHost) requests(service string) uint64 {
	for _, s := range h.Services() {
		if s.Service == service {
			return s.Requests
		}
	}
	return 0
}

// rawChannel opens a plain amqp091 channel on the vhost, for what no
// nuropb API offers: odd messages, the dead-letter queue.
func (m *mesh) rawChannel(t testing.TB) *amqp091.Channel {
	t.Helper()
	conn, err := amqp091.Dial(m.url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// deadLetter waits for a dead-lettered message that match accepts.
func deadLetter(t testing.TB, ch *amqp091.Channel, within time.Duration, match func(amqp091.Delivery) bool) amqp091.Delivery {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		d, ok, err := ch.Get(broker.DeadLetterQueue, true)
		if err != nil {
			t.Fatalf("get %s: %v", broker.DeadLetterQueue, err)
		}
		if ok && match(d) {
			return d
		}
		if !ok {
			time.Sleep(20 * time.Millisecond)
		}
	}
	t.Fatalf("nothing matching dead-lettered within %s", within)
	return amqp091.Delivery{}
}

func exampleGuests(t testing.TB) map[string][]byte {
	return map[string][]byte{
		"greeter.wasm":     goGuest(t, "modules/examples/go/greeter"),
		"orders.wasm":      goGuest(t, "modules/examples/go/orders"),
		"audit.wasm":       goGuest(t, "modules/examples/go/audit"),
		"conformance.wasm": goGuest(t, "guest-sdk/go/internal/conformance"),
	}
}

// auditSaw waits until audit reports an event on topic whose event map
// has key=val.
func auditSaw(t *testing.T, c *client.Client, topic, key, val string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		r, err := c.Call(ctxT(t, 5*time.Second), &abi.Envelope{Service: "audit", Method: "seen", Params: params(t, map[string]any{"topic": topic})})
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range decodeResult[[]map[string]any](t, r) {
			if ev, ok := rec["event"].(map[string]any); ok && fmt.Sprint(ev[key]) == val {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("audit never saw %s with %s=%s", topic, key, val)
}

func callHello(t testing.TB, c *client.Client, name string) error {
	r, err := c.Call(context.Background(), &abi.Envelope{Service: "greeter", Method: "hello", Params: params(t, map[string]any{"name": name})})
	if err != nil {
		return err
	}
	var got string
	if err := abi.Default.Unmarshal(r.Result, &got); err != nil || got != "Hello, "+name+"!" {
		return fmt.Errorf("hello %s: got %q (%v)", name, got, err)
	}
	return nil
}

func TestAMQPRoundTripCommandEvent(t *testing.T) {
	m := newMesh(t, exampleGuests(t))
	m.host(t, Config{})
	c := m.client(t)
	if err := callHello(t, c, "Ada"); err != nil {
		t.Fatal(err)
	}
	// A command to orders publishes order.created; audit hears order.# .
	if err := c.Send(ctxT(t, 5*time.Second), &abi.Envelope{Service: "orders", Method: "create", Params: params(t, map[string]any{
		"customer": "Grace", "items": []any{map[string]any{"sku": "pen", "qty": 1, "price_cents": 99}}})}); err != nil {
		t.Fatal(err)
	}
	auditSaw(t, c, "order.created", "customer", "Grace")
	// An event published from outside, two words deep, through the wildcard.
	if err := c.Publish(ctxT(t, 5*time.Second), "", &abi.Envelope{Topic: "order.shipped.eu", Event: params(t, map[string]any{"id": "o-7"})}); err != nil {
		t.Fatal(err)
	}
	auditSaw(t, c, "order.shipped.eu", "id", "o-7")

	start := time.Now()
	_, err := c.Call(ctxT(t, 20*time.Second), &abi.Envelope{Service: "nosuch", Method: "hello"})
	wantCode(t, err, abi.CodeNotFound)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("unroutable request took %s to fail; want at once", d)
	}
	_, err = c.Call(ctxT(t, 5*time.Second), &abi.Envelope{Service: "greeter", Method: "nope"})
	wantCode(t, err, abi.CodeMethodNotFound)
	d, err := c.Describe(ctxT(t, 5*time.Second), "greeter")
	if err != nil || d.Manifest.Version != "1.2.0" {
		t.Fatalf("describe: %+v %v", d, err)
	}
}

func TestAMQPDeadLetters(t *testing.T) {
	files := exampleGuests(t)
	m := newMesh(t, map[string][]byte{"greeter.wasm": files["greeter.wasm"], "conformance.wasm": files["conformance.wasm"]})
	// One instance and a prefetch of 1, so a second request must wait in
	// the queue behind a slow one.
	h := m.host(t, Config{Prefetch: 1, Modules: map[string]Limits{"default/conformance": {MaxInstances: 1}}})
	c := m.client(t)
	dl := m.rawChannel(t)

	t.Run("expired request", func(t *testing.T) {
		slow := make(chan error, 1)
		go func() {
			_, err := c.Call(context.Background(), &abi.Envelope{Service: "conformance", Method: "sleep_ms", Params: params(t, map[string]any{"ms": 1500})})
			slow <- err
		}()
		waitFor(t, func() bool {
			for _, s := range h.Services() {
				if s.Service == "conformance" && s.Busy > 0 {
					return true
				}
			}
			return false
		})
		env := &abi.Envelope{Service: "conformance", Method: "echo", Params: params(t, map[string]any{"x": 1})}
		env.SetDeadline(time.Now().Add(200 * time.Millisecond))
		_, err := c.Call(context.Background(), env)
		wantCode(t, err, abi.CodeTimeout)
		d := deadLetter(t, dl, 5*time.Second, func(d amqp091.Delivery) bool { return d.CorrelationId == env.ID })
		if reason := fmt.Sprint(d.Headers["x-first-death-reason"]); reason != "expired" {
			t.Fatalf("dead-lettered for %q, want expired", reason)
		}
		if err := <-slow; err != nil {
			t.Fatal(err)
		}
	})

	t.Run("malformed", func(t *testing.T) {
		pub := func(p amqp091.Publishing) {
			t.Helper()
			if err := dl.PublishWithContext(ctxT(t, 5*time.Second), broker.RPCExchange(""), "greeter", true, false, p); err != nil {
				t.Fatal(err)
			}
		}
		pub(amqp091.Publishing{ContentType: broker.ContentTypeCBOR, CorrelationId: "garbage-1", Body: []byte("not cbor at all")})
		pub(amqp091.Publishing{ContentType: "text/plain", Type: "request", CorrelationId: "garbage-2", Body: []byte{0xa1, 0x61}})
		// NuroPb of another protocol version, with somewhere to answer: it
		// is still refused, not answered, as NuroPb itself does.
		pub(amqp091.Publishing{ContentType: "application/json", CorrelationId: "old-nuropb", ReplyTo: "amq.rabbitmq.reply-to.nowhere",
			Headers: amqp091.Table{"nuropb_protocol": "0.1.0", "nuropb_type": "request"},
			Body:    []byte(`{"tag":"request","service":"greeter","method":"hello","params":{"name":"Ada"}}`)})
		for _, id := range []string{"garbage-1", "garbage-2", "old-nuropb"} {
			deadLetter(t, dl, 5*time.Second, func(d amqp091.Delivery) bool { return d.CorrelationId == id })
		}
		logs := h.logs.String()
		if strings.Count(logs, "malformed message") < 3 || !strings.Contains(logs, "unsupported NuroPb protocol version") {
			t.Fatalf("no log line for each malformed message:\n%s", logs)
		}
		// The consumer keeps going.
		if err := callHello(t, c, "Ada"); err != nil {
			t.Fatal(err)
		}
	})
}

// callLoad makes n calls, inflight at a time, and returns the errors;
// after(i) runs once call i has been answered.
func callLoad(n, inflight int, call func(i int64) error, after func(i int64)) []error {
	var next, done atomic.Int64
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for range inflight {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				err := call(i)
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
				if after != nil {
					after(done.Add(1))
				}
			}
		})
	}
	wg.Wait()
	return errs
}

func TestAMQPTwoHosts(t *testing.T) {
	files := exampleGuests(t)
	m := newMesh(t, map[string][]byte{"greeter.wasm": files["greeter.wasm"], "conformance.wasm": files["conformance.wasm"]})
	a, b := m.host(t, Config{}), m.host(t, Config{})
	c := m.client(t)
	hello := func(i int64) error { return callHello(t, c, fmt.Sprintf("n%d", i)) }

	t.Run("share load", func(t *testing.T) {
		if errs := callLoad(1000, 32, hello, nil); len(errs) > 0 {
			t.Fatalf("%d of 1000 calls failed, first: %v", len(errs), errs[0])
		}
		ra, rb := a.requests("greeter"), b.requests("greeter")
		t.Logf("host a served %d, host b %d", ra, rb)
		if ra == 0 || rb == 0 || ra+rb < 1000 {
			t.Fatalf("load not shared: a %d, b %d", ra, rb)
		}
	})

	t.Run("connections closed by the server", func(t *testing.T) {
		rcA, rcB := a.b.Stats().Reconnects, b.b.Stats().Reconnects
		amqptest.CloseConnections(t, m.vhost)
		start := time.Now()
		// Both hosts must be back: each has a new session, then serves.
		var ra, rb uint64
		reconnected := false
		for {
			if !reconnected && a.b.Stats().Reconnects > rcA && b.b.Stats().Reconnects > rcB {
				reconnected = true
				ra, rb = a.requests("greeter"), b.requests("greeter")
			}
			if reconnected && a.requests("greeter") > ra && b.requests("greeter") > rb {
				break
			}
			if time.Since(start) > 10*time.Second {
				t.Fatalf("hosts not serving 10 s after losing their connections (reconnected: %v)", reconnected)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, _ = c.Call(ctx, &abi.Envelope{Service: "greeter", Method: "hello", Params: params(t, map[string]any{"name": "x"})})
			cancel()
			if !reconnected {
				time.Sleep(20 * time.Millisecond)
			}
		}
		t.Logf("both hosts reconnected and serving %s after the connections were closed", time.Since(start).Round(time.Millisecond))
	})

	t.Run("host dies mid-load", func(t *testing.T) {
		// Calls that take a while, so that host a dies with guests running:
		// their deliveries must reach host b, and no error from host a may
		// reach the caller first.
		sleep := func(int64) error {
			r, err := c.Call(context.Background(), &abi.Envelope{Service: "conformance", Method: "sleep_ms", Params: params(t, map[string]any{"ms": 5})})
			if err == nil && len(r.Result) == 0 {
				err = errors.New("no result")
			}
			return err
		}
		before := b.requests("conformance")
		var once sync.Once
		killed := make(chan struct{})
		errs := callLoad(1000, 32, sleep, func(i int64) {
			if i == 300 {
				once.Do(func() {
					go func() {
						defer close(killed)
						// A hard stop: the context is already over, so nothing is
						// drained; then the connection goes.
						ctx, cancel := context.WithCancel(context.Background())
						cancel()
						_ = a.Shutdown(ctx)
						_ = a.b.Close()
					}()
				})
			}
		})
		<-killed
		if len(errs) > 0 {
			t.Fatalf("%d of 1000 calls not answered with a result after host a died, first: %v", len(errs), errs[0])
		}
		if served := b.requests("conformance") - before; served < 700 {
			t.Fatalf("survivor served only %d", served)
		}
	})
}

// nuropbClient speaks NuroPb's wire protocol 0.1.1 as NUROPB.md documents
// it, straight on amqp091-go and independently of host/internal/nuropbwire,
// so that a mistake shared by both sides cannot hide.
type nuropbClient struct {
	t       testing.TB
	ch      *amqp091.Channel
	queue   string // nuropb-{service}-{instance_id}-rq
	mu      sync.Mutex
	pending map[string]chan amqp091.Delivery
	returns chan amqp091.Return
}

func newNuroPbClient(t testing.TB, m *mesh) *nuropbClient {
	ch := m.rawChannel(t)
	var id [8]byte
	_, _ = rand.Read(id[:])
	c := &nuropbClient{t: t, ch: ch, queue: "nuropb-testclient-" + hex.EncodeToString(id[:]) + "-rq",
		pending: map[string]chan amqp091.Delivery{}, returns: ch.NotifyReturn(make(chan amqp091.Return, 8))}
	if _, err := ch.QueueDeclare(c.queue, false, true, true, false, nil); err != nil {
		t.Fatal(err)
	}
	deliveries, err := ch.Consume(c.queue, "", true, true, false, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for d := range deliveries {
			c.mu.Lock()
			w := c.pending[d.CorrelationId]
			delete(c.pending, d.CorrelationId)
			c.mu.Unlock()
			if w != nil {
				w <- d
			}
		}
	}()
	return c
}

func uuid4hex() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return hex.EncodeToString(b[:])
}

// publish sends a request or command body with NuroPb's headers and
// properties to nuropb-rpc-exchange, routing key = service.
func (c *nuropbClient) publish(tag, service, method string, params map[string]any, ttl time.Duration) (corr string, reply chan amqp091.Delivery) {
	corr, trace := uuid4hex(), uuid4hex()
	body, err := json.Marshal(map[string]any{"tag": tag, "correlation_id": corr, "context": map[string]any{"user_id": "ada"},
		"trace_id": trace, "service": service, "method": method, "params": params})
	if err != nil {
		c.t.Fatal(err)
	}
	p := amqp091.Publishing{ContentType: "application/json", CorrelationId: corr, ReplyTo: c.queue, Body: body,
		Expiration: fmt.Sprint(ttl.Milliseconds()), DeliveryMode: amqp091.Persistent,
		Headers: amqp091.Table{"nuropb_protocol": "0.1.1", "nuropb_version": "0.1.8", "nuropb_type": tag, "trace_id": trace, "encrypted": ""}}
	reply = make(chan amqp091.Delivery, 1)
	if tag == "request" {
		c.mu.Lock()
		c.pending[corr] = reply
		c.mu.Unlock()
	}
	if err := c.ch.PublishWithContext(context.Background(), "nuropb-rpc-exchange", service, true, false, p); err != nil {
		c.t.Fatal(err)
	}
	return corr, reply
}

// request returns the response body and its delivery.
func (c *nuropbClient) request(service, method string, params map[string]any) (map[string]any, amqp091.Delivery) {
	c.t.Helper()
	corr, reply := c.publish("request", service, method, params, 10*time.Second)
	select {
	case d := <-reply:
		var body map[string]any
		if err := json.Unmarshal(d.Body, &body); err != nil {
			c.t.Fatalf("response is not JSON: %v: %q", err, d.Body)
		}
		if body["correlation_id"] != corr || d.CorrelationId != corr {
			c.t.Fatalf("response correlation %v / %s, want %s", body["correlation_id"], d.CorrelationId, corr)
		}
		return body, d
	case r := <-c.returns:
		c.t.Fatalf("request returned unroutable: %s", r.ReplyText)
	case <-time.After(10 * time.Second):
		c.t.Fatalf("no response to %s.%s", service, method)
	}
	return nil, amqp091.Delivery{}
}

func TestAMQPNuroPbInterop(t *testing.T) {
	files := exampleGuests(t)
	delete(files, "conformance.wasm")
	m := newMesh(t, files)
	m.host(t, Config{})
	nc := newNuroPbClient(t, m)

	body, d := nc.request("greeter", "hello", map[string]any{"name": "Ada"})
	if body["tag"] != "response" || body["result"] != "Hello, Ada!" || body["error"] != nil || body["warning"] != nil ||
		fmt.Sprint(body["context"]) != "map[user_id:ada]" || body["trace_id"] == nil {
		t.Fatalf("hello: %v", body)
	}
	if d.ContentType != "application/json" || d.Headers["nuropb_protocol"] != "0.1.1" || d.Headers["nuropb_type"] != "response" ||
		d.Headers["trace_id"] != body["trace_id"] {
		t.Fatalf("response properties: %+v %v", d.Headers, d.ContentType)
	}

	body, _ = nc.request("greeter", "nope", nil)
	e, _ := body["error"].(map[string]any)
	if body["result"] != nil || e["error"] != "NuropbHandlingError" || e["code"] != "method_not_found" || !strings.Contains(fmt.Sprint(e["description"]), "nope") {
		t.Fatalf("unknown method: %v", body)
	}
	body, _ = nc.request("greeter", "hello", map[string]any{"name": 7})
	if e, _ := body["error"].(map[string]any); e["error"] != "NuropbValidationError" {
		t.Fatalf("bad params: %v", body)
	}

	body, _ = nc.request("greeter", client.DescribeMethod, nil)
	res, _ := body["result"].(map[string]any)
	methods, _ := res["methods"].(map[string]any)
	hello, _ := methods["hello"].(map[string]any)
	if res["service_name"] != "greeter" || res["service_version"] != "1.2.0" || hello["requires_encryption"] != false ||
		fmt.Sprint(hello["parameters"]) != "map[properties:map[name:map[description:who to greet type:string]] required:[name] type:object]" {
		t.Fatalf("describe: %v", res)
	}

	// A command: no response, but it runs (orders publishes order.created,
	// which audit records).
	nc.publish("command", "orders", "create", map[string]any{"customer": "Nuro",
		"items": []any{map[string]any{"sku": "mug", "qty": 3, "price_cents": 500}}}, 10*time.Second)
	auditSaw(t, m.client(t), "order.created", "customer", "Nuro")

	_, _ = nc.publish("request", "nosuch", "hello", nil, time.Second)
	select {
	case r := <-nc.returns:
		if r.ReplyCode != amqp091.NoRoute {
			t.Fatalf("unroutable: %d %s", r.ReplyCode, r.ReplyText)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("an unroutable NuroPb request was not returned")
	}
}

// hostBinary builds cmd/nuropb-host once per test process.
var hostBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "nuropb-host-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "nuropb-host")
	wd, _ := os.Getwd()
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/nuropb-host")
	cmd.Dir = filepath.Dir(wd)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/nuropb-host: %v\n%s", err, out)
	}
	return bin, nil
})

func builtHost(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the nuropb-host binary")
	}
	bin, err := hostBinary()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(filepath.Dir(bin)) })
	return bin
}

// cli runs the built binary with args and returns stdout, stderr and the
// exit code.
func cli(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
}

// cleanEnv keeps the developer's NUROPB_* settings out of the subprocess.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NUROPB_") {
			env = append(env, kv)
		}
	}
	return env
}

// TestAMQPRunBinary runs `nuropb-host run` on RabbitMQ as a subprocess,
// uses the CLI's --broker mode against it, then sends it SIGTERM under load.
func TestAMQPRunBinary(t *testing.T) {
	bin := builtHost(t)
	m := newMesh(t, exampleGuests(t))
	conf := filepath.Join(t.TempDir(), "host.toml")
	writeFile(t, conf, fmt.Sprintf(`broker = %q
modules_dir = %q
cache_dir = %q
watch = false
drain_timeout = "20s"
[http]
listen = "127.0.0.1:0"
[log]
level = "info"
[amqp]
reconnect_min = "50ms"
reconnect_max = "1s"
`, m.url, m.dir, filepath.Join(cacheRoot(t), "wazero-cache")))
	logs := &logBuffer{}
	run := exec.Command(bin, "run", "--config", conf)
	run.Env = cleanEnv()
	run.Stderr, run.Stdout = logs, logs
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	t.Cleanup(func() {
		_ = run.Process.Kill()
		if t.Failed() {
			t.Logf("nuropb-host run log:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(2 * time.Minute)
	for !strings.Contains(logs.String(), "nuropb-host serving") {
		select {
		case err := <-exited:
			t.Fatalf("nuropb-host run exited early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("nuropb-host run not serving after 2 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}

	t.Run("cli --broker", func(t *testing.T) {
		out, errOut, code := cli(t, bin, "call", "--broker", m.url, "greeter.hello", `{"name":"Ada"}`)
		if code != 0 || strings.TrimSpace(out) != `"Hello, Ada!"` {
			t.Fatalf("call: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		_, errOut, code = cli(t, bin, "call", "--broker", m.url, "greeter.nope")
		if code != 1 || !strings.Contains(errOut, "method_not_found") {
			t.Fatalf("unknown method: exit %d, stderr %q", code, errOut)
		}
		_, errOut, code = cli(t, bin, "call", "--broker", m.url, "--timeout", "5s", "nosuch.hello")
		if code != 1 || !strings.Contains(errOut, "not_found") {
			t.Fatalf("unknown service: exit %d, stderr %q", code, errOut)
		}
		out, errOut, code = cli(t, bin, "describe", "--broker", m.url, "greeter")
		if code != 0 || !strings.Contains(out, `"greet"`) || !strings.Contains(out, `"1.2.0"`) {
			t.Fatalf("describe: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		out, errOut, code = cli(t, bin, "send", "--broker", m.url, "orders.create",
			`{"customer":"Cli","items":[{"sku":"cup","qty":1,"price_cents":300}]}`)
		if code != 0 {
			t.Fatalf("send: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		auditSaw(t, m.client(t), "order.created", "customer", "Cli")
		out, errOut, code = cli(t, bin, "publish", "--broker", m.url, "order.refunded", `{"id":"o-9"}`)
		if code != 0 {
			t.Fatalf("publish: exit %d, stdout %q, stderr %q", code, out, errOut)
		}
		auditSaw(t, m.client(t), "order.refunded", "id", "o-9")
	})

	t.Run("SIGTERM drains", func(t *testing.T) {
		// A second host picks up what the first had not started on. It
		// serves conformance only: it needs nothing else, and under -race
		// on a loaded machine every module compiled costs a minute.
		solo := &mesh{url: m.url, vhost: m.vhost, dir: t.TempDir()}
		writeFile(t, filepath.Join(solo.dir, "conformance.wasm"), string(goGuest(t, "guest-sdk/go/internal/conformance")))
		other := solo.host(t, Config{})
		if svcs := other.Services(); len(svcs) != 1 {
			t.Fatalf("the second host does not serve conformance: %+v, refused %+v", svcs, other.Refusals())
		}
		c := m.client(t)
		var issued, answered atomic.Int64
		var stop atomic.Bool
		var mu sync.Mutex
		var failures []error
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for !stop.Load() {
					issued.Add(1)
					_, err := c.Call(context.Background(), &abi.Envelope{Service: "conformance", Method: "sleep_ms",
						Params: params(t, map[string]any{"ms": 20})})
					if err != nil {
						mu.Lock()
						failures = append(failures, err)
						mu.Unlock()
					}
					answered.Add(1)
				}
			})
		}
		waitFor(t, func() bool { return answered.Load() >= 100 })
		// Callers stop issuing before the signal, so every call counted was
		// issued before it.
		stop.Store(true)
		if err := run.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Fatalf("nuropb-host run after SIGTERM: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("nuropb-host run did not exit 30 s after SIGTERM")
		}
		wg.Wait()
		if len(failures) > 0 {
			t.Fatalf("%d of %d calls issued before SIGTERM failed, first: %v", len(failures), issued.Load(), failures[0])
		}
		if !strings.Contains(logs.String(), "stopped") {
			t.Fatalf("no clean stop in the log")
		}
		servedByOther := other.requests("conformance")
		t.Logf("%d calls issued before SIGTERM, all answered; the other host served %d", issued.Load(), servedByOther)
		if servedByOther >= uint64(issued.Load()) {
			t.Fatal("the subprocess served nothing: the test proved nothing about its drain")
		}
	})
}

// BenchmarkAMQPHostRoundTrip measures round trips per second through a
// real host: client -> RabbitMQ -> host -> Go guest (greeter.hello) ->
// reply, beside internal/rawamqp's minimal amqp091-go loop on the same vhost
// in the same run, at 1, 8 and 64 requests in flight. Host, client and the
// raw loop's two sides each have their own connection, as on several
// machines; both servers have prefetch 64.
//
//	go test -run '^$' -bench AMQPHostRoundTrip -benchtime 2s -count 5 ./host/
func BenchmarkAMQPHostRoundTrip(b *testing.B) {
	m := newMesh(b, map[string][]byte{"greeter.wasm": goGuest(b, "modules/examples/go/greeter")})
	quiet := slog.New(slog.NewTextHandler(b.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	h, err := New(Config{ModulesDir: m.dir, CacheDir: filepath.Join(cacheRoot(b), "wazero-cache"), Logger: quiet, Prefetch: 64,
		Defaults: Limits{MinInstances: 4, MaxInstances: 4}}, m.broker(b, quiet))
	if err != nil {
		b.Fatal(err)
	}
	if err := h.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = h.Shutdown(context.Background()) })
	c := client.New(m.broker(b, quiet))
	p := params(b, map[string]any{"name": "Ada"})
	// The raw loop echoes a body the size of the host's request envelope.
	raw, err := rawamqp.New(m.url, 64, make([]byte, 160))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = raw.Close() })
	modes := []struct {
		name string
		rt   func(context.Context) error
	}{
		{"host-go-guest", func(ctx context.Context) error {
			_, err := c.Call(ctx, &abi.Envelope{Service: "greeter", Method: "hello", Params: p})
			return err
		}},
		{"raw-amqp091", raw.RoundTrip},
	}
	for _, n := range []int{1, 8, 64} {
		// Interleaved level by level, so both see the same machine load.
		for _, mode := range modes {
			b.Run(fmt.Sprintf("%s/inflight=%d", mode.name, n), func(b *testing.B) {
				var next atomic.Int64
				var failed atomic.Value
				var wg sync.WaitGroup
				for range n {
					wg.Go(func() {
						for next.Add(1) <= int64(b.N) {
							if err := mode.rt(context.Background()); err != nil {
								failed.Store(err)
								return
							}
						}
					})
				}
				wg.Wait()
				if err := failed.Load(); err != nil {
					b.Fatal(err)
				}
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "rt/s")
			})
		}
	}
}
