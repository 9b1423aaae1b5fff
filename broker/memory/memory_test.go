package memory_test

import (
	"testing"

	"github.com/nuropb/nuropb/broker"
	"github.com/nuropb/nuropb/broker/brokertest"
	"github.com/nuropb/nuropb/broker/memory"
)

// factory makes memory brokers for the conformance suite.
func factory() brokertest.Factory {
	return brokertest.Factory{
		New: func(t *testing.T) broker.Broker {
			b, err := memory.New(memory.Config{})
			if err != nil {
				t.Fatal(err)
			}
			return b
		},
		DeadLetters: func(_ *testing.T, b broker.Broker) []broker.Message {
			return b.(*memory.Broker).DeadLetters()
		},
	}
}

func TestConformance(t *testing.T) { brokertest.Run(t, factory()) }
