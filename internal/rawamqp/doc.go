// Package rawamqp is the smallest honest request/reply loop written straight
// on amqp091-go: the ceiling against which nuropb's RabbitMQ broker is
// measured, by broker/amqp's benchmark and by cmd/nuropb-bench.
//
// It has the shape of a nuropb round trip (a direct exchange, a mandatory
// publish, direct reply-to, a server that replies then acks by hand with a
// fixed prefetch) and nothing else: no envelope, no deadline, no
// reconnection. Keeping one copy means both benchmarks compare against the
// same ceiling.
package rawamqp
