package memory

import "fmt"

// Defaults for a zero Config: generous for a host's normal load, small enough
// that a stuck consumer cannot take the process's memory with it.
const (
	DefaultMaxQueueLength = 100_000
	DefaultMaxDeadLetters = 10_000
)

// Config sets a Broker's limits. The zero value is valid and means the
// defaults.
type Config struct {
	// MaxQueueLength is the most messages one service queue holds while no
	// consumer takes them. Publishing beyond it fails with ErrQueueFull
	// (RabbitMQ's x-max-length with overflow reject-publish). Messages
	// handed straight to a consumer do not count. 0 means
	// DefaultMaxQueueLength.
	MaxQueueLength int
	// MaxDeadLetters is how many dead letters DeadLetters keeps; beyond it the
	// oldest are dropped. 0 means DefaultMaxDeadLetters.
	MaxDeadLetters int
}

// Validate reports the first field that cannot be used.
func (c Config) Validate() error {
	if c.MaxQueueLength < 0 {
		return fmt.Errorf("memory broker: MaxQueueLength is %d, want 0 (default) or more", c.MaxQueueLength)
	}
	if c.MaxDeadLetters < 0 {
		return fmt.Errorf("memory broker: MaxDeadLetters is %d, want 0 (default) or more", c.MaxDeadLetters)
	}
	return nil
}

// withDefaults fills zero fields.
func (c Config) withDefaults() Config {
	if c.MaxQueueLength == 0 {
		c.MaxQueueLength = DefaultMaxQueueLength
	}
	if c.MaxDeadLetters == 0 {
		c.MaxDeadLetters = DefaultMaxDeadLetters
	}
	return c
}
