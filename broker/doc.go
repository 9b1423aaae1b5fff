// Package broker defines how messages move between callers and services:
// the Broker interface, implemented by broker/memory (the embedded default)
// and broker/amqp (RabbitMQ), and the naming both use for exchanges, queues
// and routing keys.
//
// A Broker knows nothing of WebAssembly or of envelopes' contents: it moves
// opaque bodies with a few properties, routes them by tenant, service and
// topic, and gives at-least-once delivery with manual acknowledgement.
package broker
