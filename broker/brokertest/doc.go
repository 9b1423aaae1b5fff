// Package brokertest is the conformance suite every broker.Broker must pass:
// the same behaviour tests run against broker/memory and broker/amqp.
//
// Call Run from a test of the implementation's package with a Factory that
// makes a fresh broker per test. Each test works in its own randomly named
// tenant, so the suite can share one real RabbitMQ with other runs.
package brokertest
