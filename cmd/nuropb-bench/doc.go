// Command nuropb-bench measures where nuropb stands, side by side, in one
// run, and writes one table (make bench writes it to BENCHMARKS.md).
//
//	go run ./cmd/nuropb-bench -o BENCHMARKS.md            # everything, ~5-8 min on 2 cores
//	go run ./cmd/nuropb-bench -quick -only rpc -langs rust  # smoke test, seconds
//	go run ./cmd/nuropb-bench -only overhead -cpuprofile cpu.out  # host processes: cpu.out.host-<n>
//
// Rows (select with -only, comma-separated): rpc (round trips on the
// embedded broker, Go/Rust/Python guests), rpc-amqp (RabbitMQ, caller and
// host in separate processes, beside a raw amqp091-go loop on the same
// broker), oneway (commands and events handled), overhead (a full in-process
// call against a bare wazero call of the same guest export), reload (settle
// to serving, latency during reloads), coldstart (100 tenants, cold and
// cached) and density (RSS of 1,000 idle modules, per instance per
// language); compile (100 distinct modules) runs only when named.
//
// Why it is built this way:
//   - Every row is run -runs times (3 by default) and reported as the median
//     with min-max: the machine it runs on is shared and noisy, and a single
//     run can be off by 2-5x.
//   - Runs of the figures that are compared (nuropb against raw AMQP, full
//     call against bare call) are interleaved within each repetition, so load
//     that comes and goes hits both alike; ratios are taken per run.
//   - RabbitMQ rows put the host in another process (this program
//     re-executed, see child.go) on a fresh vhost, as in production;
//     cold start and density also run in a fresh process, so nothing warmed
//     or allocated by earlier rows is counted.
//   - Targets are printed beside the figures with pass/miss and never
//     asserted: a benchmark that fails on a busy machine teaches nothing.
//   - RabbitMQ rows are skipped when the broker cannot be reached, except
//     under CI=true, where they must run.
//   - An existing "## Analysis" section of the output file is kept when the
//     table above it is rewritten: the numbers are regenerated, the reading
//     of them is written by a person.
package main
