package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/url"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/broker/amqp"
	"github.com/nuropb/nuropb/broker/memory"
	"github.com/nuropb/nuropb/client"
	"github.com/nuropb/nuropb/cmd/nuropb-host/internal/config"
)

// openBroker opens the broker the settings name: the embedded one or RabbitMQ.
func openBroker(ctx context.Context, s *config.Settings, logger *slog.Logger) (broker.Broker, error) {
	if s.Broker == "memory" {
		return memory.New(memory.Config{})
	}
	return amqp.New(ctx, amqp.Config{URL: s.Broker, ReconnectMin: s.ReconnectMin, ReconnectMax: s.ReconnectMax, Logger: logger})
}

// redactURL hides a broker URL's password for logs and messages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	return u.Redacted()
}

// clientDialTimeout bounds how long a client subcommand tries to reach RabbitMQ.
const clientDialTimeout = 3 * time.Second

// brokerBackend is a client talking to RabbitMQ directly, no host needed.
type brokerBackend struct {
	b broker.Broker
	c *client.Client
}

func openBrokerBackend(ctx context.Context, rawURL string) (backend, error) {
	// A client fails fast when the broker is unreachable instead of
	// retrying until the call's deadline, as a host starting up would.
	dialCtx, cancel := context.WithTimeout(ctx, clientDialTimeout)
	defer cancel()
	b, err := amqp.New(dialCtx, amqp.Config{URL: rawURL, Logger: slog.New(slog.DiscardHandler), DialTimeout: clientDialTimeout})
	if err != nil {
		return nil, abi.Errorf(abi.CodeUnavailable, "broker %s: %v", redactURL(rawURL), err)
	}
	return &brokerBackend{b: b, c: client.New(b)}, nil
}

func (k *brokerBackend) close() { _ = k.b.Close() }

func (k *brokerBackend) call(ctx context.Context, env *abi.Envelope) (json.RawMessage, error) {
	reply, err := k.c.Call(ctx, env)
	if err != nil {
		return nil, err
	}
	return abi.Default.CBORToJSON(reply.Result)
}

func (k *brokerBackend) send(ctx context.Context, env *abi.Envelope) error {
	return k.c.Send(ctx, env)
}

func (k *brokerBackend) publish(ctx context.Context, tenant string, env *abi.Envelope) error {
	return k.c.Publish(ctx, tenant, env)
}

func (k *brokerBackend) describe(ctx context.Context, service string) (json.RawMessage, error) {
	d, err := k.c.Describe(ctx, service)
	if err != nil {
		return nil, err
	}
	return json.Marshal(d)
}

func (k *brokerBackend) services(context.Context) (json.RawMessage, error) {
	return nil, abi.Errorf(abi.CodeBadRequest, "services lists what one host serves: use --addr with that host's gateway")
}
