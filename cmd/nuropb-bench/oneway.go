package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/broker/amqp"
	"github.com/nuropb/nuropb/client"
	"github.com/nuropb/nuropb/host"
)

// senders is how many goroutines send commands or publish events at once:
// on RabbitMQ each waits for its publisher confirm.
const senders = 64

// oneway measures commands and events handled per second by the Rust
// conformance guest (echo for commands; its conformance.# subscription for
// events), counted by the host as guest calls completed: the rate is from
// the first send to the last message handled, not merely published.
func oneway(ctx context.Context, b *bench) error {
	wasm, err := b.guest("rust")
	if err != nil {
		return err
	}
	e, err := startEmbedded(ctx, b, map[string][]byte{"conformance.wasm": wasm}, host.Config{Defaults: benchLimits()})
	if err != nil {
		return err
	}
	defer e.close()
	embeddedHandled := func(context.Context) (uint64, error) { return calls(e.h), nil }
	if err := onewayRows(ctx, b, "embedded", e.client("default"), embeddedHandled, nil); err != nil {
		return err
	}

	if err := amqpReachable(b.opts.amqpURL); err != nil {
		if isCI() {
			return fmt.Errorf("RabbitMQ is required under CI=true: %w", err)
		}
		b.skip("oneway", "RabbitMQ rows: not reachable: "+err.Error())
		return nil
	}
	url, dropVhost, err := newVhost(ctx, b.opts.amqpURL)
	if err != nil {
		return err
	}
	defer dropVhost()
	// Prefetch 64 as in the RabbitMQ RPC rows: with the default (2 x
	// MaxInstances) the host would wait on acks, not on work.
	ch, err := startChild(ctx, b, childConfig{Broker: url, Prefetch: 64, Limits: benchLimits()}, map[string][]byte{"conformance.wasm": wasm})
	if err != nil {
		return err
	}
	defer ch.stop()
	br, err := amqp.New(ctx, amqp.Config{URL: url, Logger: b.log})
	if err != nil {
		return err
	}
	defer br.Close()
	childHandled := func(ctx context.Context) (uint64, error) {
		rep, err := ch.stats(ctx)
		return rep.Calls, err
	}
	pids := append([]int{ch.cmd.Process.Pid}, rabbitPIDs()...)
	return onewayRows(ctx, b, "RabbitMQ, host in another process", client.New(br), childHandled, pids)
}

// onewayRows adds the commands and events rows; CPU time is this
// process's plus that of pids.
func onewayRows(ctx context.Context, b *bench, where string, c *client.Client, handled func(context.Context) (uint64, error), pids []int) error {
	kinds := []struct {
		name string
		send func(ctx context.Context) error
	}{
		{"commands", func(ctx context.Context) error {
			return c.Send(ctx, &abi.Envelope{Service: "conformance", Method: "echo", Params: tinyParams})
		}},
		{"events", func(ctx context.Context) error {
			return c.Publish(ctx, "", &abi.Envelope{Topic: "conformance.bench", Event: tinyParams})
		}},
	}
	for _, k := range kinds {
		r := b.newRow("oneway", fmt.Sprintf("%s, %s handled (%s per run)", where, k.name, thousands(int64(b.opts.messages))), "/s")
		for run := range b.opts.runs {
			meter := newCPUMeter(pids...)
			meter.begin()
			rate, err := onewayRun(ctx, b.opts.messages, k.send, handled)
			if err != nil {
				return fmt.Errorf("%s: %w", r.name, err)
			}
			r.add(rate)
			r.addCPU(meter.perOp(b.opts.messages))
			b.progress("%s run %d: %s", r.name, run+1, format(rate, "/s"))
		}
	}
	return nil
}

// onewayRun sends n messages from senders goroutines and returns how many
// per second were handled, waiting until handled() has grown by n.
func onewayRun(ctx context.Context, n int, send func(context.Context) error, handled func(context.Context) (uint64, error)) (float64, error) {
	base, err := handled(ctx)
	if err != nil {
		return 0, err
	}
	var (
		next    atomic.Int64
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	start := time.Now()
	for range senders {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if err := send(ctx); err != nil {
					errOnce.Do(func() { first = err })
					return
				}
			}
		})
	}
	wg.Wait()
	if first != nil {
		return 0, first
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		got, err := handled(ctx)
		if err != nil {
			return 0, err
		}
		if got >= base+uint64(n) {
			return float64(n) / time.Since(start).Seconds(), nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("only %d of %d handled after 2 minutes", got-base, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
