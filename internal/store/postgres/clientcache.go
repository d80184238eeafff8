package postgres

import (
	"sync"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/store"
)

// ClientsChannel is the NOTIFY channel on which a changed or deleted client's ID is
// announced, so that every replica drops its cached copy.
const ClientsChannel = "kubeoauth_clients"

// clientCacheTTL bounds how long a cached client is trusted without a notification,
// in case one is missed while a listener reconnects.
const clientCacheTTL = 10 * time.Second

// clientCache keeps clients in memory: every token request authenticates its client
// and every token lookup loads one, and a query each time was a third of the token
// endpoint's database round trips. Entries go on NOTIFY (InvalidateClient) or after
// clientCacheTTL.
type clientCache struct {
	mu      sync.RWMutex
	entries map[string]cachedClient
}

type cachedClient struct {
	c  *store.Client
	at time.Time
}

func (cc *clientCache) get(id string, now time.Time) (*store.Client, bool) {
	cc.mu.RLock()
	defer cc.mu.RUnlock()
	e, ok := cc.entries[id]
	if !ok || now.Sub(e.at) > clientCacheTTL {
		return nil, false
	}
	return e.c, true
}

func (cc *clientCache) put(c *store.Client, now time.Time) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.entries == nil {
		cc.entries = map[string]cachedClient{}
	}
	cc.entries[c.ID] = cachedClient{c: c, at: now}
}

// InvalidateClient drops one cached client and its cached tokens (a notification
// named it: it changed or was deleted).
func (s *Store) InvalidateClient(id string) {
	s.clients.mu.Lock()
	delete(s.clients.entries, id)
	s.clients.mu.Unlock()
	s.tokens.drop(Invalidation{ClientID: id})
}

// InvalidateClients drops every cached client and token (notifications may have been
// missed).
func (s *Store) InvalidateClients() {
	s.clients.mu.Lock()
	s.clients.entries = nil
	s.clients.mu.Unlock()
	s.tokens.clear()
}
