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
//
// As with clients (see clientCache), a fill whose read started before an
// invalidation that names its token is dropped: the cache remembers the last
// invalidations with their generation, and refuses a fill when one of those since
// its read matches, or when they no longer reach back that far.
type tokenCache struct {
	mu        sync.RWMutex
	bySig     map[string]cachedToken
	byRequest map[string]map[string]struct{}
	byGrant   map[string]map[string]struct{}
	byClient  map[string]map[string]struct{}
	gen       uint64
	recent    [recentInvalidations]genInvalidation // recent[g % len] is generation g's
}

// recentInvalidations is how many invalidations a fill can be checked against; a
// read slower than that many invalidations is simply not cached.
const recentInvalidations = 256

type genInvalidation struct {
	gen uint64
	inv Invalidation
	all bool
}

func (gi genInvalidation) matches(sig string, row *tokenRow) bool {
	i := gi.inv
	return gi.all || i.Signature != "" && i.Signature == sig || i.RequestID != "" && i.RequestID == row.requestID ||
		i.GrantID != "" && i.GrantID == row.grantID || i.ClientID != "" && i.ClientID == row.clientID
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
		return invalidationSignaturePrefix + i.Signature
	case i.RequestID != "":
		return "req:" + i.RequestID
	case i.GrantID != "":
		return "grant:" + i.GrantID
	default:
		return "client:" + i.ClientID
	}
}

// invalidationSignaturePrefix starts the payload naming one token, also written in
// SQL by flushUnits.
const invalidationSignaturePrefix = "sig:"

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

// generation is taken before a read whose result may be put.
func (tc *tokenCache) generation() uint64 {
	tc.mu.RLock()
	defer tc.mu.RUnlock()
	return tc.gen
}

// record notes an invalidation; the caller holds the lock.
func (tc *tokenCache) record(inv Invalidation, all bool) {
	tc.gen++
	tc.recent[tc.gen%recentInvalidations] = genInvalidation{gen: tc.gen, inv: inv, all: all}
}

// invalidatedSince reports whether an invalidation after readGen may name the token;
// the caller holds the lock.
func (tc *tokenCache) invalidatedSince(readGen uint64, sig string, row *tokenRow) bool {
	if tc.gen-readGen >= recentInvalidations {
		return true
	}
	for g := readGen + 1; g <= tc.gen; g++ {
		if tc.recent[g%recentInvalidations].matches(sig, row) {
			return true
		}
	}
	return false
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

// put stores row, read at generation readGen, unless it was invalidated since.
func (tc *tokenCache) put(sig string, row *tokenRow, now time.Time, readGen uint64) bool {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.invalidatedSince(readGen, sig, row) {
		return false
	}
	if tc.bySig == nil || len(tc.bySig) >= tokenCacheMax {
		tc.reset()
	}
	tc.bySig[sig] = cachedToken{row: row, at: now}
	index(tc.byRequest, row.requestID, sig)
	index(tc.byClient, row.clientID, sig)
	if row.grantID != "" {
		index(tc.byGrant, row.grantID, sig)
	}
	return true
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
	tc.record(Invalidation{}, true)
	tc.reset()
	tc.mu.Unlock()
}

func (tc *tokenCache) drop(inv Invalidation) {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	tc.record(inv, false)
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

// tokensGone tells every replica, this one included, to drop the named tokens once
// q's transaction commits: the others hear the NOTIFY then, this one runs the drop
// then (see afterCommit).
func (s *Store) tokensGone(ctx context.Context, q querier, inv Invalidation) error {
	s.afterCommit(ctx, func() { s.tokens.drop(inv) })
	_, err := q.ExecContext(ctx, `SELECT pg_notify($1, $2)`, TokensChannel, inv.String())
	return err
}
