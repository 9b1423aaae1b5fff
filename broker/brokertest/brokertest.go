package brokertest

import (
	"testing"
	"time"

	"github.com/nuropb/nuropb/broker"
)

// Factory gives the suite the brokers to test and a way to see their dead
// letters, which the Broker interface deliberately does not expose.
type Factory struct {
	// New returns a fresh, connected broker for one test. Run closes it when
	// the test ends, so New need not (Close must tolerate a second call).
	New func(t *testing.T) broker.Broker

	// DeadLetters returns the messages b has dead-lettered since New
	// returned it, oldest first. Tests find theirs by CorrelationID, so on a
	// shared RabbitMQ it may return other tests' too; it must not drain
	// what a later call should still return. For RabbitMQ: bind a private
	// exclusive queue to broker.DeadLetterExchange in New and accumulate
	// what it receives. nil skips the tests that need it.
	DeadLetters func(t *testing.T, b broker.Broker) []broker.Message

	// Patience is how long to wait for something that must happen (a
	// delivery, a dead letter). 0 means 2 s.
	Patience time.Duration
	// Quiet is how long to watch for something that must not happen (a
	// second delivery, a message in another tenant). 0 means 100 ms.
	Quiet time.Duration
}

// test is one behaviour of the suite.
type test struct {
	name string
	run  func(e *env)
}

// tests lists every behaviour, grouped by the file that holds it.
var tests = []test{
	// rpc.go
	{"RequestReply", testRequestReply},
	{"RequestIgnoresMismatchedReply", testRequestIgnoresMismatchedReply},
	{"UnknownRouteFailsAtOnce", testUnknownRoute},
	{"RequestEndsWithContext", testRequestEndsWithContext},
	{"RequestWaitsForConsumer", testRequestWaitsForConsumer},
	{"SendDeliveredOnce", testSendDeliveredOnce},
	{"DefaultTenantAlias", testDefaultTenantAlias},
	// events.go
	{"PublishWildcards", testPublishWildcards},
	{"PublishNobodyListening", testPublishNobodyListening},
	{"TenantQueuesAreSeparate", testTenantQueues},
	{"TenantEventsAreSeparate", testTenantEvents},
	// consume.go
	{"CompetingConsumers", testCompetingConsumers},
	{"PrefetchBoundsConcurrency", testPrefetchBounds},
	{"PrefetchZeroIsUnlimited", testPrefetchUnlimited},
	{"RejectRequeueRedelivers", testRejectRequeue},
	{"RejectDeadLetters", testRejectDeadLetters},
	{"ExpiredMessageDeadLettered", testExpiration},
	{"SettleOnlyOnce", testSettleOnce},
	{"StopWaitsForHandlers", testStopWaits},
	{"StopRequeuesUnacked", testStopRequeues},
	{"StopHardCancelsHandlers", testStopHard},
	// lifecycle.go
	{"Retire", testRetire},
	{"RetireRemovesBindings", testRetireRemovesBindings},
	{"CloseFailsLaterCalls", testCloseFailsCalls},
	{"CloseUnblocksRequest", testCloseUnblocksRequest},
}

// Run runs the whole suite, each behaviour as a parallel subtest with its own
// broker from f.New.
func Run(t *testing.T, f Factory) {
	if f.New == nil {
		t.Fatal("brokertest: Factory.New is nil")
	}
	if f.Patience == 0 {
		f.Patience = 2 * time.Second
	}
	if f.Quiet == 0 {
		f.Quiet = 100 * time.Millisecond
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.run(newEnv(t, f))
		})
	}
}
