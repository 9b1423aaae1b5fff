// Package amqp implements broker.Broker on RabbitMQ (AMQP 0-9-1) so that
// nuropb hosts on many machines share services, with reconnect and confirms.
//
// Topology follows ARCHITECTURE.md: per tenant a direct rpc exchange and a
// topic events exchange, one fanout dead-letter exchange with a durable
// queue, and one durable shared queue per service. Requests are answered
// through RabbitMQ's direct reply-to; commands and events are persistent and
// publisher-confirmed. RATIONALE.md records why, with the measurements.
//
// # Disconnects
//
// The broker reconnects by itself with capped exponential backoff and
// jitter, redeclares its topology and restarts every consumer. While it is
// disconnected, Request, Send, Publish, Reply, Retire and Serve fail at once
// with an error wrapping broker.ErrUnavailable instead of waiting: the
// caller (the host) owns the retry policy and the deadline, and an outage
// does not pile up blocked goroutines that would all fire together when the
// connection returns. Requests and confirms in flight when the connection
// drops fail the same way; the at-least-once contract holds because
// unacknowledged deliveries go back to their queues.
//
// # Long handlers
//
// RabbitMQ closes a channel whose delivery stays unacknowledged longer than
// its consumer_timeout (30 minutes by default), which would take every
// other delivery of that channel with it. Config.HandlerTimeout, set below
// the server's timeout, caps how long a delivery may stay unsettled: when it
// expires the handler's context is cancelled and the delivery is
// dead-lettered by the broker, so the channel survives; a late Ack returns
// ErrSettled.
package amqp
