package bridge

import (
	"context"
	"errors"
	"sync"
)

// ErrSessionClosed is what Credit.Take returns once its session has ended.
var ErrSessionClosed = errors.New("session closed")

// Credit is the sending side of a session's flow control: how many
// numbered messages the peer still lets it send. Grant adds what the peer
// grants; Take waits for one. Both ends of a session use one per direction.
type Credit struct {
	mu   sync.Mutex
	n    int
	more chan struct{}
}

// NewCredit returns a Credit holding n.
func NewCredit(n int) *Credit { return &Credit{n: n, more: make(chan struct{}, 1)} }

// Grant adds n.
func (c *Credit) Grant(n int) {
	c.mu.Lock()
	c.n += n
	c.mu.Unlock()
	c.wake()
}

func (c *Credit) wake() {
	select {
	case c.more <- struct{}{}:
	default:
	}
}

// Take waits until there is credit and takes one, or returns ctx's error,
// or ErrSessionClosed once done is closed.
func (c *Credit) Take(ctx context.Context, done <-chan struct{}) error {
	for {
		c.mu.Lock()
		if c.n > 0 {
			c.n--
			left := c.n
			c.mu.Unlock()
			if left > 0 {
				c.wake() // another waiter may take the rest
			}
			return nil
		}
		c.mu.Unlock()
		select {
		case <-c.more:
		case <-done:
			return ErrSessionClosed
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
