// Package amqptest gives tests a private RabbitMQ vhost on the local broker,
// created fresh for the test and deleted when it ends.
//
// It drives rabbitmqctl, so it needs to run where the broker runs (as in
// the project's dev and CI machines). When RabbitMQ cannot be reached the
// test is skipped, unless the environment variable CI is "true": then it
// fails, so that a CI run never passes by skipping its integration tests.
package amqptest
