package main

import (
	"context"
	"fmt"
	"time"

	"github.com/nuropb/nuropb/abi"
	"github.com/nuropb/nuropb/broker/amqp"
	"github.com/nuropb/nuropb/client"
	"github.com/nuropb/nuropb/host"
	"github.com/nuropb/nuropb/internal/rawamqp"
)

// embeddedTargets are the round-trip targets at 64 in flight.
var embeddedTargets = map[string]float64{"rust": 300_000, "go": 150_000, "python": 20_000}

// rpcEmbedded measures client.Call -> memory broker -> host -> guest echo,
// one tenant per language on one host.
func rpcEmbedded(ctx context.Context, b *bench) error {
	files := map[string][]byte{}
	for _, l := range b.opts.langs {
		wasm, err := b.guest(l)
		if err != nil {
			return err
		}
		files[l+"/conformance.wasm"] = wasm
	}
	e, err := startEmbedded(ctx, b, files, host.Config{Defaults: benchLimits()})
	if err != nil {
		return err
	}
	defer e.close()
	for _, l := range b.opts.langs {
		call := echoCall(e.client(l), "conformance")
		for _, n := range b.opts.levels {
			r := b.newRow("rpc", fmt.Sprintf("%s guest, %d in flight", langTitle[l], n), "rt/s")
			if t, ok := embeddedTargets[l]; ok && n == 64 {
				r.withTarget("≥ "+format(t, "rt/s"), func(m float64) bool { return m >= t })
			}
			for run := range b.opts.runs {
				res, err := drive(ctx, n, b.warmup(), b.opts.dur, call, nil)
				if err != nil {
					return fmt.Errorf("%s: %w", r.name, err)
				}
				r.add(res.rate())
				r.addLatency(res.p(50), res.p(99))
				r.addCPU(res.cpu)
				b.progress("%s run %d: %s, p99 %s", r.name, run+1, format(res.rate(), "rt/s"), res.p(99))
			}
		}
	}
	return nil
}

func (b *bench) warmup() time.Duration { return min(b.opts.dur/5, 300*time.Millisecond) }

// rpcAMQP measures a caller in this process and a host (Rust guest) in a
// child process on a fresh vhost, beside the raw amqp091-go loop on the
// same vhost, interleaved level by level so both see the same load.
func rpcAMQP(ctx context.Context, b *bench) error {
	wasm, err := b.guest("rust")
	if err != nil {
		return err
	}
	url, dropVhost, err := newVhost(ctx, b.opts.amqpURL)
	if err != nil {
		return err
	}
	defer dropVhost()
	// Prefetch 64 on both sides, the raw loop's: at the host's default
	// (2 x MaxInstances) the host would be measured against a server allowed
	// eight times more messages in flight.
	const prefetch = 64
	ch, err := startChild(ctx, b, childConfig{Broker: url, Prefetch: prefetch, Limits: benchLimits()},
		map[string][]byte{"conformance.wasm": wasm})
	if err != nil {
		return err
	}
	defer ch.stop()

	br, err := amqp.New(ctx, amqp.Config{URL: url, Logger: b.log})
	if err != nil {
		return err
	}
	defer br.Close()
	c := client.New(br)
	call := echoCall(c, "conformance")
	// The raw loop carries a body the size of the request envelope nuropb sends.
	env := echoEnvelope("conformance")
	env.Kind, env.ID, env.TraceID = abi.KindRequest, c.NewID(), client.NewTraceID()
	env.SetDeadline(time.Now().Add(client.DefaultTimeout))
	body, err := abi.Default.EncodeEnvelope(env)
	if err != nil {
		return err
	}
	raw, err := rawamqp.New(url, prefetch, body)
	if err != nil {
		return err
	}
	defer raw.Close()

	rabbit := rabbitPIDs()
	hostPID := ch.cmd.Process.Pid
	type level struct{ nuropb, raw, ratio *row }
	levels := map[int]level{}
	for _, n := range b.opts.levels {
		levels[n] = level{
			nuropb: b.newRow("rpc-amqp", fmt.Sprintf("nuropb, Rust guest, %d in flight", n), "rt/s"),
			raw:    b.newRow("rpc-amqp", fmt.Sprintf("raw amqp091-go loop, %d in flight", n), "rt/s"),
			ratio: b.newRow("rpc-amqp", fmt.Sprintf("nuropb / raw, %d in flight", n), "%").
				withTarget("≥ 80%", func(m float64) bool { return m >= 80 }),
		}
	}
	for run := range b.opts.runs {
		for _, n := range b.opts.levels {
			lv := levels[n]
			nres, err := drive(ctx, n, b.warmup(), b.opts.dur, call, newCPUMeter(append([]int{hostPID}, rabbit...)...))
			if err != nil {
				return fmt.Errorf("%s: %w", lv.nuropb.name, err)
			}
			rres, err := drive(ctx, n, b.warmup(), b.opts.dur, raw.RoundTrip, newCPUMeter(rabbit...))
			if err != nil {
				return fmt.Errorf("%s: %w", lv.raw.name, err)
			}
			lv.nuropb.add(nres.rate())
			lv.nuropb.addLatency(nres.p(50), nres.p(99))
			lv.nuropb.addCPU(nres.cpu)
			lv.raw.add(rres.rate())
			lv.raw.addLatency(rres.p(50), rres.p(99))
			lv.raw.addCPU(rres.cpu)
			lv.ratio.add(100 * nres.rate() / rres.rate())
			b.progress("run %d, %d in flight: nuropb %s, raw %s (%s)", run+1, n, format(nres.rate(), "rt/s"),
				format(rres.rate(), "rt/s"), format(100*nres.rate()/rres.rate(), "%"))
		}
	}
	return nil
}
