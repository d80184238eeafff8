package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/lib/pq"
)

// Follow listens to the NOTIFYs of every replica until ctx ends: a changed client or
// an ended access token leaves this replica's caches, and an appended event calls
// logged. It never gives up: when the connection cannot be made, or LISTEN is refused
// (a standby during a failover, a pooler), it tries again with backoff up to
// listenMaxBackoff. Whenever it starts listening — the first time, after a retry,
// after pq reconnects — notifications sent before may have been missed, and anything
// cached before may be stale, so it empties the client cache and calls logged. While
// it does not listen (before the first LISTEN, while pq reconnects, between
// retries) the store answers from the database only: what it would cache could be
// revoked by another replica without a word.
//
// It listens on Options.ListenDSN, or the DSN the store was opened with.
func (s *Store) Follow(ctx context.Context, logged func()) error {
	s.following.Store(true)
	backoff := listenMinBackoff
	for {
		err := s.listenOnce(ctx, logged)
		if ctx.Err() != nil {
			return nil
		}
		s.opts.Log.Warn("event listener: cannot listen; retrying", "in", backoff, "err", err)
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
func (s *Store) listenOnce(ctx context.Context, logged func()) error {
	log := s.opts.Log
	l := pq.NewListener(s.listenDSN, listenMinBackoff, listenMaxBackoff, func(ev pq.ListenerEventType, err error) {
		if ev == pq.ListenerEventDisconnected || ev == pq.ListenerEventConnectionAttemptFailed {
			s.listening.Store(false) // NOTIFYs are lost until it reconnects
		}
		if err != nil {
			log.Warn("event listener", "event", ev, "err", err)
		}
	})
	defer func() { _ = l.Close() }()
	defer s.listening.Store(false)
	// pq's Listen waits for a connection as long as it takes; a closed listener
	// ends the wait, so ctx can.
	listening := make(chan error, 1)
	go func() {
		for _, ch := range []string{NotifyChannel, ClientsChannel, TokensChannel} {
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
	s.InvalidateClients()
	s.listening.Store(true)
	logged()
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
				s.InvalidateClients()
				s.listening.Store(true)
				logged()
			case n.Channel == ClientsChannel:
				s.InvalidateClient(n.Extra)
			case n.Channel == TokensChannel:
				if inv, ok := ParseInvalidation(n.Extra); ok {
					s.InvalidateTokens(inv)
				}
			default:
				logged()
			}
		case <-time.After(time.Minute):
			go func() { _ = l.Ping() }()
		}
	}
}
