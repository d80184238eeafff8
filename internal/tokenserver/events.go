package tokenserver

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/lib/pq"

	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
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

// Cache is the store's cache of clients and access tokens, which notifications
// invalidate.
type Cache interface {
	InvalidateClient(id string)
	InvalidateClients()
	InvalidateTokens(inv postgres.Invalidation)
}

// Listen follows PostgreSQL NOTIFY until ctx ends: an event wakes b; a changed client
// or an ended access token leaves the cache. After a reconnect, notifications sent
// while the connection was down are lost, so it wakes b and empties the cache.
func Listen(ctx context.Context, dsn string, b *Broadcaster, cache Cache, log *slog.Logger) error {
	l := pq.NewListener(dsn, 100*time.Millisecond, 10*time.Second, func(ev pq.ListenerEventType, err error) {
		if err != nil {
			log.Warn("event listener", "event", ev, "err", err)
		}
	})
	defer func() { _ = l.Close() }()
	for _, ch := range []string{postgres.NotifyChannel, postgres.ClientsChannel, postgres.TokensChannel} {
		if err := l.Listen(ch); err != nil {
			return err
		}
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case n := <-l.Notify:
			switch {
			case n == nil: // reconnected
				cache.InvalidateClients()
				b.Notify()
			case n.Channel == postgres.ClientsChannel:
				cache.InvalidateClient(n.Extra)
			case n.Channel == postgres.TokensChannel:
				if inv, ok := postgres.ParseInvalidation(n.Extra); ok {
					cache.InvalidateTokens(inv)
				}
			default:
				b.Notify()
			}
		case <-time.After(time.Minute):
			go func() { _ = l.Ping() }()
		}
	}
}

// RunJanitor deletes expired rows every interval, in batches, until ctx ends. Several
// replicas may run it; the store lets one at a time work.
func RunJanitor(ctx context.Context, st Store, interval time.Duration, batch int, log *slog.Logger) {
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
