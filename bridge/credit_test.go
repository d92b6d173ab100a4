package bridge

import (
	"context"
	"errors"
	"sync"
	"testing"
)

// Takers never take more than was granted, and all that was granted is
// taken, whatever the interleaving.
func TestCreditNeverOverdraws(t *testing.T) {
	c := NewCredit(2)
	var wg sync.WaitGroup
	taken := make(chan struct{}, 100)
	ctx, cancel := context.WithCancel(t.Context())
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for c.Take(ctx, nil) == nil {
				taken <- struct{}{}
			}
		}()
	}
	for range 8 {
		c.Grant(6)
	}
	for range 50 {
		<-taken
	}
	cancel()
	wg.Wait()
	if n := len(taken); n != 0 {
		t.Fatalf("%d taken beyond the 50 granted", n)
	}
	done := make(chan struct{})
	close(done)
	if err := NewCredit(0).Take(t.Context(), done); !errors.Is(err, ErrSessionClosed) {
		t.Fatalf("Take after the session ended: %v", err)
	}
}
