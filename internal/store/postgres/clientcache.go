package postgres

import (
	"sync"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/store"
)

// ClientsChannel is the NOTIFY channel on which a changed or deleted client's ID is
// announced, so that every replica drops its cached copy.
const ClientsChannel = "kubeoauth_clients"

// DefaultClientCacheTTL bounds how long a cached client is trusted without a
// notification, in case one is missed while a listener reconnects (the listener
// empties the caches when it reconnects, so this is a second line).
const DefaultClientCacheTTL = 10 * time.Second

// clientCache keeps clients in memory: every token request authenticates its client
// and every token lookup loads one, and a query each time was a third of the token
// endpoint's database round trips. Entries go on NOTIFY (InvalidateClient) or after
// the TTL.
//
// A reader fills the cache with what it read; a change can commit and be announced
// between its read and its fill, and the fill would then put back the old copy for a
// whole TTL. Every invalidation therefore takes a new generation, and a fill whose
// read started before an invalidation of its client (or of all clients) is dropped.
type clientCache struct {
	mu      sync.RWMutex
	entries map[string]cachedClient
	gen     uint64
	// dropped is the generation of each client's last invalidation; cleared that of
	// the last InvalidateClients. Clients are few, so dropped stays small.
	dropped map[string]uint64
	cleared uint64
}

type cachedClient struct {
	c  *store.Client
	at time.Time
}

func (cc *clientCache) get(id string, now time.Time, ttl time.Duration) (*store.Client, bool) {
	cc.mu.RLock()
	defer cc.mu.RUnlock()
	e, ok := cc.entries[id]
	if !ok || now.Sub(e.at) > ttl {
		return nil, false
	}
	return e.c, true
}

// generation is taken before a read whose result may be put.
func (cc *clientCache) generation() uint64 {
	cc.mu.RLock()
	defer cc.mu.RUnlock()
	return cc.gen
}

// put stores c, read at generation readGen, unless it was invalidated since.
func (cc *clientCache) put(c *store.Client, now time.Time, readGen uint64) bool {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.cleared > readGen || cc.dropped[c.ID] > readGen {
		return false
	}
	if cc.entries == nil {
		cc.entries = map[string]cachedClient{}
	}
	cc.entries[c.ID] = cachedClient{c: c, at: now}
	return true
}

func (cc *clientCache) drop(id string) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.gen++
	if cc.dropped == nil {
		cc.dropped = map[string]uint64{}
	}
	cc.dropped[id] = cc.gen
	delete(cc.entries, id)
}

func (cc *clientCache) clear() {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.gen++
	cc.cleared = cc.gen
	cc.entries = nil
	cc.dropped = nil // cleared covers them
}

// InvalidateClient drops one cached client and its cached tokens (a notification
// named it: it changed or was deleted).
func (s *Store) InvalidateClient(id string) {
	s.clients.drop(id)
	s.tokens.drop(Invalidation{ClientID: id})
}

// InvalidateClients drops every cached client and token (notifications may have been
// missed).
func (s *Store) InvalidateClients() {
	s.clients.clear()
	s.tokens.clear()
}
