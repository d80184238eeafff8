package tokenserver

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/store"
)

// Broadcaster wakes everyone waiting for the next event-log entry.
type Broadcaster struct {
	mu sync.Mutex
	ch chan struct{}
}

// NewBroadcaster returns a Broadcaster with nobody waiting.
func NewBroadcaster() *Broadcaster { return &Broadcaster{ch: make(chan struct{})} }

// Wait returns a channel closed at the next Notify.
func (b *Broadcaster) Wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.ch
}

// Notify wakes every waiter.
func (b *Broadcaster) Notify() {
	b.mu.Lock()
	close(b.ch)
	b.ch = make(chan struct{})
	b.mu.Unlock()
}

// RunJanitor deletes expired rows every interval, in batches, until ctx ends. Several
// replicas may run it; the store lets one at a time work.
func RunJanitor(ctx context.Context, st store.Store, interval time.Duration, batch int, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		total := 0
		for {
			n, err := st.DeleteExpired(ctx, time.Now(), batch)
			if err != nil {
				log.Warn("janitor", "err", err)
				break
			}
			total += n
			if n < batch || ctx.Err() != nil {
				break
			}
		}
		if total > 0 {
			log.Info("janitor deleted expired rows", "rows", total)
		}
	}
}
