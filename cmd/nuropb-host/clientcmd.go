package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/client"
)

const callUsage = `Usage: nuropb-host call [flags] [tenant/]service.method [params-json]

Sends a request and prints the result as JSON. Params are a JSON object of
keyword arguments (read from stdin when given as -). A failed call prints the
error code and message and exits 1.

Example:
  nuropb-host call greeter.hello '{"name":"Ada"}'
  nuropb-host call --broker amqp://guest:guest@127.0.0.1:5672/ greeter.hello '{"name":"Ada"}'`

const sendUsage = `Usage: nuropb-host send [flags] [tenant/]service.method [params-json]

Sends a command (fire-and-forget) and prints its id once the broker has it.

Example:
  nuropb-host send audit.reset '{}'`

const publishUsage = `Usage: nuropb-host publish [flags] [tenant/]topic [event-json]

Publishes an event on a topic; every service subscribed to a matching
pattern (order.*, order.#) receives it.

Example:
  nuropb-host publish order.shipped '{"id":"o-1"}'`

const describeUsage = `Usage: nuropb-host describe [flags] [tenant/]service

Asks a service, through the mesh, for its methods, docs, version and the
content hash of the module serving it.

Example:
  nuropb-host describe greeter`

const servicesUsage = `Usage: nuropb-host services [flags]

Lists the services a running host serves (its HTTP gateway), per tenant.

Example:
  nuropb-host services --addr http://127.0.0.1:8080`

// clientFlags are shared by the client subcommands.
type clientFlags struct {
	addr    string
	broker  string
	timeout time.Duration
	traceID string
	token   string
}

func addClientFlags(fs *flag.FlagSet) *clientFlags {
	c := &clientFlags{}
	fs.StringVar(&c.addr, "addr", envOr("NUROPB_ADDR", "http://127.0.0.1:8080"), "a running host's HTTP gateway (env NUROPB_ADDR)")
	fs.StringVar(&c.broker, "broker", os.Getenv("NUROPB_CLIENT_BROKER"), "talk to RabbitMQ directly instead of a host's gateway, e.g. amqp://guest:guest@127.0.0.1:5672/ (env NUROPB_CLIENT_BROKER)")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "deadline of the request")
	fs.StringVar(&c.traceID, "trace-id", "", "trace id to send (generated when empty)")
	fs.StringVar(&c.token, "token", os.Getenv("NUROPB_TOKEN"), "bearer token passed to the service in the request context (env NUROPB_TOKEN)")
	return c
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// backend is how a client subcommand reaches the mesh: a host's HTTP
// gateway, or the broker directly.
type backend interface {
	call(ctx context.Context, env *abi.Envelope) (json.RawMessage, error)
	send(ctx context.Context, env *abi.Envelope) error
	publish(ctx context.Context, tenant string, env *abi.Envelope) error
	describe(ctx context.Context, service string) (json.RawMessage, error)
	services(ctx context.Context) (json.RawMessage, error)
	close()
}

func (c *clientFlags) open(ctx context.Context) (backend, error) {
	if c.broker != "" {
		return openBrokerBackend(ctx, c.broker)
	}
	u, err := url.Parse(c.addr)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, usageError{fmt.Sprintf("--addr %q is not an http:// URL", c.addr)}
	}
	return &httpBackend{base: strings.TrimRight(c.addr, "/"), token: c.token, hc: &http.Client{Timeout: c.timeout + 5*time.Second}}, nil
}

// envelope builds a request envelope from the target and params arguments.
func (c *clientFlags) envelope(args []string) (*abi.Envelope, error) {
	if len(args) < 1 || len(args) > 2 {
		return nil, usageError{"want a target and at most one params argument"}
	}
	service, method, err := client.ParseTarget(args[0])
	if err != nil {
		return nil, usageError{err.Error()}
	}
	params, err := jsonArg(args[1:])
	if err != nil {
		return nil, err
	}
	if len(params) > 0 && params[0]>>5 != 5 {
		return nil, usageError{"params must be a JSON object of keyword arguments, e.g. '{\"name\":\"Ada\"}'"}
	}
	env := &abi.Envelope{Service: service, Method: method, Params: params, TraceID: c.traceID}
	env.SetDeadline(time.Now().Add(c.timeout))
	if c.token != "" {
		env.Context = map[string]any{"token": c.token}
	}
	return env, nil
}

// jsonArg converts the optional JSON argument ("-" reads stdin) to CBOR.
func jsonArg(args []string) (abi.RawValue, error) {
	if len(args) == 0 {
		return nil, nil
	}
	doc := []byte(args[0])
	if args[0] == "-" {
		var err error
		if doc, err = io.ReadAll(os.Stdin); err != nil {
			return nil, err
		}
	}
	v, err := abi.Default.JSONToCBOR(doc)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	return v, nil
}

func printJSON(w io.Writer, raw []byte) error {
	var buf bytes.Buffer
	raw = bytes.TrimSpace(raw)
	if err := json.Indent(&buf, raw, "", "  "); err != nil {
		_, err = fmt.Fprintf(w, "%s\n", raw)
		return err
	}
	buf.WriteByte('\n')
	_, err := w.Write(buf.Bytes())
	return err
}

// withBackend opens the backend the flags name, runs do with a context
// bounded by the request timeout (plus slack for the transport), and closes
// the backend.
func (c *clientFlags) withBackend(slack time.Duration, do func(ctx context.Context, b backend) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout+slack)
	defer cancel()
	b, err := c.open(ctx)
	if err != nil {
		return err
	}
	defer b.close()
	return do(ctx, b)
}

// clientCommand parses a client subcommand's flags and arguments.
func clientCommand(name, usage string, args []string, stderr io.Writer) (*clientFlags, []string, error) {
	fs := newFlags(name, usage, stderr)
	cf := addClientFlags(fs)
	pos, err := parse(fs, args)
	return cf, pos, err
}

func callCmd(args []string, stdout, stderr io.Writer) error {
	cf, pos, err := clientCommand("call", callUsage, args, stderr)
	if err != nil {
		return err
	}
	env, err := cf.envelope(pos)
	if err != nil {
		return err
	}
	return cf.withBackend(5*time.Second, func(ctx context.Context, b backend) error {
		out, err := b.call(ctx, env)
		if err != nil {
			return err
		}
		return printJSON(stdout, out)
	})
}

func sendCmd(args []string, stdout, stderr io.Writer) error {
	cf, pos, err := clientCommand("send", sendUsage, args, stderr)
	if err != nil {
		return err
	}
	env, err := cf.envelope(pos)
	if err != nil {
		return err
	}
	return cf.withBackend(0, func(ctx context.Context, b backend) error {
		if err := b.send(ctx, env); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "sent command %s.%s\n", env.Service, env.Method)
		return nil
	})
}

func publishCmd(args []string, stdout, stderr io.Writer) error {
	cf, pos, err := clientCommand("publish", publishUsage, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) < 1 || len(pos) > 2 {
		return usageError{"want a topic and at most one event argument"}
	}
	tenant, topic, ok := strings.Cut(pos[0], "/")
	if !ok {
		tenant, topic = "", pos[0]
	}
	event, err := jsonArg(pos[1:])
	if err != nil {
		return err
	}
	env := &abi.Envelope{Topic: topic, Event: event, TraceID: cf.traceID}
	return cf.withBackend(0, func(ctx context.Context, b backend) error {
		if err := b.publish(ctx, tenant, env); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "published event on %s\n", pos[0])
		return nil
	})
}

func describeCmd(args []string, stdout, stderr io.Writer) error {
	cf, pos, err := clientCommand("describe", describeUsage, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usageError{"want one service name"}
	}
	return cf.withBackend(0, func(ctx context.Context, b backend) error {
		out, err := b.describe(ctx, pos[0])
		if err != nil {
			return err
		}
		return printJSON(stdout, out)
	})
}

func servicesCmd(args []string, stdout, stderr io.Writer) error {
	cf, pos, err := clientCommand("services", servicesUsage, args, stderr)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageError{"takes no arguments"}
	}
	return cf.withBackend(0, func(ctx context.Context, b backend) error {
		out, err := b.services(ctx)
		if err != nil {
			return err
		}
		return printJSON(stdout, out)
	})
}
