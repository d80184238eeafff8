package tokenserver

import (
	"context"
	"errors"
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
// or an ended access token leaves the cache. It never gives up: when the connection
// cannot be made, or LISTEN is refused (a standby during a failover, a pooler), it
// tries again with backoff up to listenMaxBackoff. Whenever it starts listening —
// the first time, after a retry, after pq reconnects — notifications sent before may
// have been missed, and anything cached before may be stale, so it empties the cache
// and wakes b.
func Listen(ctx context.Context, dsn string, b *Broadcaster, cache Cache, log *slog.Logger) error {
	backoff := listenMinBackoff
	for {
		err := listenOnce(ctx, dsn, b, cache, log)
		if ctx.Err() != nil {
			return nil
		}
		log.Warn("event listener: cannot listen; retrying", "in", backoff, "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, listenMaxBackoff)
	}
}

// Backoff between attempts to listen.
const (
	listenMinBackoff = 100 * time.Millisecond
	listenMaxBackoff = 10 * time.Second
)

// listenOnce listens on one pq.Listener (which reconnects by itself after losing a
// connection it had) until ctx ends or LISTEN fails.
func listenOnce(ctx context.Context, dsn string, b *Broadcaster, cache Cache, log *slog.Logger) error {
	l := pq.NewListener(dsn, listenMinBackoff, listenMaxBackoff, func(ev pq.ListenerEventType, err error) {
		if err != nil {
			log.Warn("event listener", "event", ev, "err", err)
		}
	})
	defer func() { _ = l.Close() }()
	// pq's Listen waits for a connection as long as it takes; a closed listener
	// ends the wait, so ctx can.
	listening := make(chan error, 1)
	go func() {
		for _, ch := range []string{postgres.NotifyChannel, postgres.ClientsChannel, postgres.TokensChannel} {
			if err := l.Listen(ch); err != nil {
				listening <- err
				return
			}
		}
		listening <- nil
	}()
	select {
	case <-ctx.Done():
		return nil
	case err := <-listening:
		if err != nil {
			return err
		}
	}
	cache.InvalidateClients()
	b.Notify()
	log.Info("event listener: listening")
	for {
		select {
		case <-ctx.Done():
			return nil
		case n, ok := <-l.Notify:
			switch {
			case !ok:
				return errors.New("the listener closed")
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
