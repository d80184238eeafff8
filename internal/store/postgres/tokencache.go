package postgres

import (
	"context"
	"strings"
	"sync"
	"time"
)

// TokensChannel is the NOTIFY channel on which access tokens that stopped being valid
// are announced (see Invalidation.String), so that every replica drops them from its
// cache.
const TokensChannel = "kubeoauth_tokens" // #nosec G101 -- a channel name, not a credential

// tokenCacheTTL bounds how long a cached access token is trusted without a
// notification, in case one is missed while a listener reconnects.
const tokenCacheTTL = 5 * time.Second

// tokenCacheMax bounds the cache's size; beyond it, lookups go to the database.
const tokenCacheMax = 100_000

// tokenCache keeps live access tokens a replica has looked up, so that introspecting
// or using the same token again does not cost a database round trip. Anything that
// ends a token — revocation by request, grant or client, rotation, deletion —
// invalidates it here and, by NOTIFY on TokensChannel (or ClientsChannel), on every
// other replica, within the same transaction's commit.
type tokenCache struct {
	mu        sync.RWMutex
	bySig     map[string]cachedToken
	byRequest map[string]map[string]struct{}
	byGrant   map[string]map[string]struct{}
	byClient  map[string]map[string]struct{}
}

type cachedToken struct {
	row *tokenRow
	at  time.Time
}

// Invalidation names access tokens that are no longer valid: one field is set.
type Invalidation struct {
	Signature, RequestID, GrantID, ClientID string
}

// String is the NOTIFY payload: "sig:…", "req:…", "grant:…" or "client:…".
func (i Invalidation) String() string {
	switch {
	case i.Signature != "":
		return "sig:" + i.Signature
	case i.RequestID != "":
		return "req:" + i.RequestID
	case i.GrantID != "":
		return "grant:" + i.GrantID
	default:
		return "client:" + i.ClientID
	}
}

// ParseInvalidation reads a NOTIFY payload.
func ParseInvalidation(payload string) (Invalidation, bool) {
	kind, v, ok := strings.Cut(payload, ":")
	if !ok || v == "" {
		return Invalidation{}, false
	}
	switch kind {
	case "sig":
		return Invalidation{Signature: v}, true
	case "req":
		return Invalidation{RequestID: v}, true
	case "grant":
		return Invalidation{GrantID: v}, true
	case "client":
		return Invalidation{ClientID: v}, true
	}
	return Invalidation{}, false
}

func (tc *tokenCache) get(sig string, now time.Time) (*tokenRow, bool) {
	tc.mu.RLock()
	defer tc.mu.RUnlock()
	e, ok := tc.bySig[sig]
	if !ok || now.Sub(e.at) > tokenCacheTTL {
		return nil, false
	}
	return e.row, true
}

func (tc *tokenCache) put(sig string, row *tokenRow, now time.Time) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.bySig == nil || len(tc.bySig) >= tokenCacheMax {
		tc.reset()
	}
	tc.bySig[sig] = cachedToken{row: row, at: now}
	index(tc.byRequest, row.requestID, sig)
	index(tc.byClient, row.clientID, sig)
	if row.grantID != "" {
		index(tc.byGrant, row.grantID, sig)
	}
}

func index(m map[string]map[string]struct{}, key, sig string) {
	if m[key] == nil {
		m[key] = map[string]struct{}{}
	}
	m[key][sig] = struct{}{}
}

// reset empties the cache; the caller holds the lock.
func (tc *tokenCache) reset() {
	tc.bySig = map[string]cachedToken{}
	tc.byRequest = map[string]map[string]struct{}{}
	tc.byGrant = map[string]map[string]struct{}{}
	tc.byClient = map[string]map[string]struct{}{}
}

func (tc *tokenCache) clear() {
	tc.mu.Lock()
	tc.reset()
	tc.mu.Unlock()
}

func (tc *tokenCache) drop(inv Invalidation) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.bySig == nil {
		return
	}
	var sigs map[string]struct{}
	switch {
	case inv.Signature != "":
		sigs = map[string]struct{}{inv.Signature: {}}
	case inv.RequestID != "":
		sigs = tc.byRequest[inv.RequestID]
	case inv.GrantID != "":
		sigs = tc.byGrant[inv.GrantID]
	default:
		sigs = tc.byClient[inv.ClientID]
	}
	for sig := range sigs {
		e, ok := tc.bySig[sig]
		if !ok {
			continue
		}
		delete(tc.bySig, sig)
		unindex(tc.byRequest, e.row.requestID, sig)
		unindex(tc.byClient, e.row.clientID, sig)
		unindex(tc.byGrant, e.row.grantID, sig)
	}
}

func unindex(m map[string]map[string]struct{}, key, sig string) {
	if set := m[key]; set != nil {
		delete(set, sig)
		if len(set) == 0 {
			delete(m, key)
		}
	}
}

// InvalidateTokens drops cached access tokens (a notification named them).
func (s *Store) InvalidateTokens(inv Invalidation) { s.tokens.drop(inv) }

// tokensGone drops the named tokens here and tells the other replicas, in q's
// transaction: they hear it when it commits.
func (s *Store) tokensGone(ctx context.Context, q querier, inv Invalidation) error {
	s.tokens.drop(inv)
	_, err := q.ExecContext(ctx, `SELECT pg_notify($1, $2)`, TokensChannel, inv.String())
	return err
}
