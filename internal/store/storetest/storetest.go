// Package storetest is the conformance suite a token-server store (an oauth.Storage)
// must pass: clients, fosite's token storage with refresh rotation and its grace
// period, consent grants, sign-in sessions, the event log and the janitor, including
// concurrent use. Run it from the implementation's tests against a real database.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/openid"

	"github.com/kubeoauth/kubeoauth/internal/oauth"
	"github.com/kubeoauth/kubeoauth/internal/store"
)

// Config is what a suite asks of a new store.
type Config struct {
	RefreshGracePeriod time.Duration
	Now                func() time.Time
}

// Factory returns a new, empty store; the implementation cleans it up with t.Cleanup.
type Factory func(t *testing.T, cfg Config) oauth.Storage

// Run runs every conformance test.
func Run(t *testing.T, newStore Factory) {
	t.Run("Clients", func(t *testing.T) { testClients(t, newStore) })
	t.Run("ClientOwnership", func(t *testing.T) { testClientOwnership(t, newStore) })
	t.Run("GrantOwnerPrecondition", func(t *testing.T) { testGrantOwnerPrecondition(t, newStore) })
	t.Run("AccessTokens", func(t *testing.T) { testAccessTokens(t, newStore) })
	t.Run("AuthorizeCodes", func(t *testing.T) { testAuthorizeCodes(t, newStore) })
	t.Run("RefreshRotationAndGrace", func(t *testing.T) { testRefreshRotation(t, newStore) })
	t.Run("Revocation", func(t *testing.T) { testRevocation(t, newStore) })
	t.Run("Grants", func(t *testing.T) { testGrants(t, newStore) })
	t.Run("Janitor", func(t *testing.T) { testJanitor(t, newStore) })
	t.Run("ClientAssertionReplay", func(t *testing.T) { testJTI(t, newStore) })
	t.Run("ConcurrentEventsInCommitOrder", func(t *testing.T) { testConcurrentEvents(t, newStore) })
	t.Run("ConcurrentIdempotentPut", func(t *testing.T) { testConcurrentPut(t, newStore) })
	t.Run("ConcurrentRotation", func(t *testing.T) { testConcurrentRotation(t, newStore) })
	t.Run("GrantExpiry", func(t *testing.T) { testGrantExpiry(t, newStore) })
	t.Run("GrantNarrowing", func(t *testing.T) { testGrantNarrowing(t, newStore) })
	t.Run("FirstPartyApprovals", func(t *testing.T) { testFirstPartyApprovals(t, newStore) })
	t.Run("ConcurrentFirstPartyEnd", func(t *testing.T) { testConcurrentFirstPartyEnd(t, newStore) })
	t.Run("DeletedClientGetsNoToken", func(t *testing.T) { testDeletedClientGetsNoToken(t, newStore) })
	t.Run("SignInSessions", func(t *testing.T) { testSignInSessions(t, newStore) })
	t.Run("SignInSessionJanitor", func(t *testing.T) { testSignInSessionJanitor(t, newStore) })
	t.Run("PushedAuthorizationRequests", func(t *testing.T) { testPAR(t, newStore) })
	t.Run("DeviceCodes", func(t *testing.T) { testDeviceCodes(t, newStore) })
}

// Clock is a settable clock for the grace period and expiry tests.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock starts at a fixed instant.
func NewClock() *Clock { return &Clock{now: time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

// Step moves the clock on.
func (c *Clock) Step(d time.Duration) { c.mu.Lock(); c.now = c.now.Add(d); c.mu.Unlock() }

// Session is a fosite session that belongs to a consent grant.
type Session struct {
	openid.DefaultSession
	GrantID        string    `json:"grantID,omitempty"`
	GrantExpiresAt time.Time `json:"grantExpiresAt,omitzero"`
}

// GetGrantID tells the store which grant the token belongs to.
func (s *Session) GetGrantID() string { return s.GrantID }

// GetGrantExpiresAt tells the store when the grant expires.
func (s *Session) GetGrantExpiresAt() time.Time { return s.GrantExpiresAt }

// Clone implements fosite.Session.
func (s *Session) Clone() fosite.Session {
	c := *s
	c.DefaultSession = *s.DefaultSession.Clone().(*openid.DefaultSession)
	return &c
}

func testClient(id string) *store.Client {
	return &store.Client{
		ID: id, SecretHash: store.LegacyHashSecret("s3cret-s3cret-s3cret-s3cret-s3cret"), OwnerNamespace: "observability",
		ClientSpec: store.ClientSpec{
			Name: "Grafana", OwnerTeam: "observability", GrantTypes: []string{"authorization_code", "refresh_token", "client_credentials"},
			RedirectURIs: []string{"https://grafana.example.com/cb"}, Scopes: []string{"openid", "profile"},
			TokenEndpointAuthMethod: "client_secret_basic",
		},
	}
}

func request(t *testing.T, s oauth.Storage, requestID, subject, grantID string, now time.Time) *fosite.Request {
	t.Helper()
	c, err := s.GetClient(context.Background(), "grafana")
	if err != nil {
		t.Fatalf("GetClient(grafana): %v", err)
	}
	sess := &Session{GrantID: grantID}
	sess.Subject = subject
	sess.SetExpiresAt(fosite.AccessToken, now.Add(time.Hour))
	sess.SetExpiresAt(fosite.RefreshToken, now.Add(720*time.Hour))
	sess.SetExpiresAt(fosite.AuthorizeCode, now.Add(10*time.Minute))
	r := &fosite.Request{ID: requestID, RequestedAt: now, Client: c, Session: sess,
		RequestedScope: fosite.Arguments{"openid", "profile"}, GrantedScope: fosite.Arguments{"openid"},
		Form: map[string][]string{"scope": {"openid profile"}}}
	return r
}

func mustPutClient(t *testing.T, s oauth.Storage, c *store.Client) {
	t.Helper()
	if _, err := s.PutClient(context.Background(), c); err != nil {
		t.Fatalf("PutClient: %v", err)
	}
}

func testClients(t *testing.T, newStore Factory) {
	ctx := context.Background()
	s := newStore(t, Config{})
	c := testClient("grafana")
	changed, err := s.PutClient(ctx, c)
	if err != nil || !changed {
		t.Fatalf("first PutClient = %v, %v; want changed", changed, err)
	}
	if changed, err := s.PutClient(ctx, testClient("grafana")); err != nil || changed {
		t.Fatalf("same PutClient again = %v, %v; want unchanged (idempotent PUT)", changed, err)
	}
	got, err := s.GetClientByID(ctx, "grafana")
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "Grafana" || got.OwnerNamespace != "observability" || !slices.Equal(got.RedirectURIs, c.RedirectURIs) ||
		string(got.SecretHash) != string(c.SecretHash) {
		t.Errorf("GetClientByID = %+v, want what was put", got)
	}
	c2 := testClient("grafana")
	c2.Scopes = append(c2.Scopes, "email")
	if changed, err := s.PutClient(ctx, c2); err != nil || !changed {
		t.Fatalf("PutClient with a new scope = %v, %v; want changed", changed, err)
	}
	if _, err := s.GetClientByID(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetClientByID(unknown) err = %v, want ErrNotFound", err)
	}
	if _, err := s.GetClient(ctx, "nobody"); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("fosite GetClient(unknown) err = %v, want fosite.ErrNotFound", err)
	}
	mustPutClient(t, s, testClient("argo"))
	list, err := s.ListClients(ctx, store.Page{})
	if err != nil || len(list) != 2 || list[0].ID != "argo" || list[1].ID != "grafana" {
		t.Fatalf("ListClients = %v, %v; want argo, grafana", list, err)
	}
	for _, tc := range []struct {
		page store.Page
		want string
	}{{store.Page{Limit: 1}, "argo"}, {store.Page{After: "argo", Limit: 1}, "grafana"}, {store.Page{After: "grafana", Limit: 1}, ""}} {
		list, err := s.ListClients(ctx, tc.page)
		got := ""
		if len(list) > 0 {
			got = list[0].ID
		}
		if err != nil || len(list) > 1 || got != tc.want {
			t.Errorf("ListClients(%+v) = %d clients (%q), %v; want %q alone", tc.page, len(list), got, err, tc.want)
		}
	}

	// Deleting a client takes its tokens and grants with it, and is logged.
	now := time.Now()
	if err := s.CreateAccessTokenSession(ctx, "at-sig", request(t, s, "req-1", "alice", "", now)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: "alice", Scopes: []string{"openid"},
		Source: store.SourceBrowser}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAccessTokenSession(ctx, "at-sig", &Session{}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteClient(ctx, "grafana", ""); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteClient(ctx, "grafana", ""); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteClient err = %v, want ErrNotFound", err)
	}
	if _, err := s.GetAccessTokenSession(ctx, "at-sig", &Session{}); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("token of a deleted client: err = %v, want ErrNotFound", err)
	}
	if gs, _ := s.ListGrants(ctx, store.GrantFilter{ClientID: "grafana"}); len(gs) != 0 {
		t.Errorf("grants of a deleted client remain: %v", gs)
	}
	evs, err := s.Events(ctx, 0, 10)
	if err != nil || len(evs) == 0 || evs[len(evs)-1].Kind != store.EventClientDeleted || evs[len(evs)-1].ClientID != "grafana" {
		t.Errorf("events after DeleteClient = %+v, %v; want client_deleted last", evs, err)
	}
}

// A grant write naming an owner touches only that owner's client: the check that
// stops one namespace from pre-approving or revoking consent to another's client
// holds in the write's own transaction, not in an earlier read.
func testGrantOwnerPrecondition(t *testing.T, newStore Factory) {
	ctx := context.Background()
	s := newStore(t, Config{})
	mustPutClient(t, s, testClient("grafana")) // owner "observability"
	alice := func(owner string) *store.ConsentGrant {
		return &store.ConsentGrant{ClientID: "grafana", Subject: "alice", Scopes: []string{"openid"},
			Source: store.SourceDeclared, Owner: owner}
	}
	if _, err := s.PutGrant(ctx, alice("tenant-x")); !errors.Is(err, store.ErrOwnerConflict) {
		t.Errorf("PutGrant by another owner err = %v, want ErrOwnerConflict", err)
	}
	if gs, _ := s.ListGrants(ctx, store.GrantFilter{ClientID: "grafana"}); len(gs) != 0 {
		t.Errorf("a refused PutGrant stored %+v", gs)
	}
	if _, err := s.PutGrant(ctx, alice("nobody-has-it")); !errors.Is(err, store.ErrOwnerConflict) {
		t.Errorf("PutGrant by an unknown owner err = %v, want ErrOwnerConflict", err)
	}
	if _, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "missing", Subject: "alice", Scopes: []string{"openid"},
		Source: store.SourceDeclared, Owner: "observability"}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("PutGrant on an unknown client err = %v, want ErrNotFound", err)
	}
	if _, err := s.PutGrant(ctx, alice("observability")); err != nil {
		t.Fatalf("the owner's PutGrant: %v", err)
	}
	if _, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: "bob", Scopes: []string{"openid"},
		Source: store.SourceBrowser}); err != nil {
		t.Fatal(err)
	}
	if gs, err := s.ListGrants(ctx, store.GrantFilter{Source: store.SourceDeclared}); err != nil || len(gs) != 1 || gs[0].Subject != "alice" {
		t.Errorf("declared grants = %+v, %v; want alice's only", gs, err)
	}
	if gs, err := s.ListGrants(ctx, store.GrantFilter{ClientID: "grafana", Limit: 1}); err != nil || len(gs) != 1 || gs[0].Subject != "alice" {
		t.Errorf("the first page of grafana's grants = %+v, %v; want alice's alone", gs, err)
	}
	if gs, err := s.ListGrants(ctx, store.GrantFilter{ClientID: "grafana", AfterClientID: "grafana", AfterSubject: "alice", Limit: 1}); err != nil ||
		len(gs) != 1 || gs[0].Subject != "bob" {
		t.Errorf("grafana's grants after alice's = %+v, %v; want bob's alone", gs, err)
	}
	if err := s.RevokeOwnedGrant(ctx, "grafana", "alice", "tenant-x"); !errors.Is(err, store.ErrOwnerConflict) {
		t.Errorf("RevokeOwnedGrant by another owner err = %v, want ErrOwnerConflict", err)
	}
	if g, err := s.GetGrant(ctx, "grafana", "alice"); err != nil || g == nil {
		t.Errorf("the grant after a refused revoke: %v, %v; want it kept", g, err)
	}
	if err := s.RevokeOwnedGrant(ctx, "grafana", "alice", "observability"); err != nil {
		t.Errorf("the owner's RevokeOwnedGrant: %v", err)
	}
	if err := s.RevokeOwnedGrant(ctx, "grafana", "alice", "observability"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("RevokeOwnedGrant of a revoked grant err = %v, want ErrNotFound", err)
	}
}

// A client never changes owner namespace through PutClient, and a DeleteClient naming
// an owner removes only that owner's client: what stops one tenant from taking over
// or deleting another's client.
func testClientOwnership(t *testing.T, newStore Factory) {
	ctx := context.Background()
	s := newStore(t, Config{})
	victim := testClient("grafana")
	mustPutClient(t, s, victim)
	if _, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: "alice", Scopes: []string{"openid"},
		Source: store.SourceBrowser}); err != nil {
		t.Fatal(err)
	}

	attacker := testClient("grafana")
	attacker.OwnerNamespace = "tenant-x"
	attacker.SecretHash = store.LegacyHashSecret("attacker-attacker-attacker-attacker")
	attacker.RedirectURIs = []string{"https://evil.example.com/cb"}
	changed, err := s.PutClient(ctx, attacker)
	if !errors.Is(err, store.ErrOwnerConflict) || changed {
		t.Fatalf("PutClient with another owner = %v, %v; want ErrOwnerConflict", changed, err)
	}
	if want := `"observability"`; !strings.Contains(err.Error(), want) {
		t.Errorf("conflict error %q does not name the owner %s", err, want)
	}
	got, err := s.GetClientByID(ctx, "grafana")
	if err != nil || got.OwnerNamespace != "observability" || string(got.SecretHash) != string(victim.SecretHash) ||
		!slices.Equal(got.RedirectURIs, victim.RedirectURIs) {
		t.Errorf("after a refused takeover the client is %+v, %v; want it unchanged", got, err)
	}

	// The owner's own changes still go through.
	update := testClient("grafana")
	update.Scopes = append(update.Scopes, "email")
	if changed, err := s.PutClient(ctx, update); err != nil || !changed {
		t.Errorf("the owner's PutClient = %v, %v; want changed", changed, err)
	}

	if err := s.DeleteClient(ctx, "grafana", "tenant-x"); !errors.Is(err, store.ErrOwnerConflict) {
		t.Errorf("DeleteClient by another owner err = %v, want ErrOwnerConflict", err)
	}
	if _, err := s.GetClientByID(ctx, "grafana"); err != nil {
		t.Errorf("the client is gone after a refused delete: %v", err)
	}
	if gs, _ := s.ListGrants(ctx, store.GrantFilter{ClientID: "grafana"}); len(gs) != 1 {
		t.Errorf("grants after a refused delete = %v, want alice's", gs)
	}
	if err := s.DeleteClient(ctx, "nobody", "tenant-x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("DeleteClient(unknown) with an owner err = %v, want ErrNotFound", err)
	}
	if err := s.DeleteClient(ctx, "grafana", "observability"); err != nil {
		t.Fatalf("DeleteClient by its owner: %v", err)
	}
	if _, err := s.GetClientByID(ctx, "grafana"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("after the owner's delete: %v, want ErrNotFound", err)
	}
	// Once deleted, the ID is free for anyone.
	if changed, err := s.PutClient(ctx, attacker); err != nil || !changed {
		t.Errorf("PutClient of a free ID = %v, %v; want created", changed, err)
	}
}

func testAccessTokens(t *testing.T, newStore Factory) {
	ctx := context.Background()
	s := newStore(t, Config{})
	mustPutClient(t, s, testClient("grafana"))
	now := time.Now().UTC().Truncate(time.Second)
	grant, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: "alice", Scopes: []string{"openid"},
		Source: store.SourceBrowser})
	if err != nil {
		t.Fatal(err)
	}
	req := request(t, s, "req-1", "alice", grant.ID, now)
	if err := s.CreateAccessTokenSession(ctx, "sig-1", req); err != nil {
		t.Fatal(err)
	}
	sess := &Session{}
	got, err := s.GetAccessTokenSession(ctx, "sig-1", sess)
	if err != nil {
		t.Fatal(err)
	}
	if got.GetID() != "req-1" || got.GetClient().GetID() != "grafana" || !got.GetRequestedAt().Equal(now) ||
		!slices.Equal(got.GetGrantedScopes(), fosite.Arguments{"openid"}) ||
		!slices.Equal(got.GetRequestedScopes(), fosite.Arguments{"openid", "profile"}) ||
		got.GetRequestForm().Get("scope") != "openid profile" {
		t.Errorf("GetAccessTokenSession = %+v, want the request stored", got)
	}
	if sess.Subject != "alice" || sess.GrantID != grant.ID || !sess.GetExpiresAt(fosite.AccessToken).Equal(now.Add(time.Hour)) {
		t.Errorf("session = %+v, want subject alice, grant grant-1, expiry in an hour", sess)
	}
	if _, err := s.GetAccessTokenSession(ctx, "nope", &Session{}); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("unknown signature: err = %v, want fosite.ErrNotFound", err)
	}
	if err := s.DeleteAccessTokenSession(ctx, "sig-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAccessTokenSession(ctx, "sig-1", &Session{}); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("deleted token: err = %v, want fosite.ErrNotFound", err)
	}
	// PKCE and OpenID Connect sessions round-trip the same way.
	if err := s.CreatePKCERequestSession(ctx, "code-sig", req); err != nil {
		t.Fatal(err)
	}
	if r, err := s.GetPKCERequestSession(ctx, "code-sig", &Session{}); err != nil || r.GetID() != "req-1" {
		t.Errorf("GetPKCERequestSession = %v, %v", r, err)
	}
	if err := s.CreateOpenIDConnectSession(ctx, "code-sig", req); err != nil {
		t.Fatal(err)
	}
	if r, err := s.GetOpenIDConnectSession(ctx, "code-sig", &fosite.Request{Session: &Session{}}); err != nil || r.GetID() != "req-1" {
		t.Errorf("GetOpenIDConnectSession = %v, %v", r, err)
	}
	if err := s.DeleteOpenIDConnectSession(ctx, "code-sig"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetOpenIDConnectSession(ctx, "code-sig", &fosite.Request{Session: &Session{}}); !errors.Is(err, openid.ErrNoSessionFound) {
		t.Errorf("deleted OIDC session: err = %v, want ErrNoSessionFound", err)
	}
}

func testAuthorizeCodes(t *testing.T, newStore Factory) {
	ctx := context.Background()
	s := newStore(t, Config{})
	mustPutClient(t, s, testClient("grafana"))
	req := request(t, s, "req-1", "alice", "", time.Now())
	if err := s.CreateAuthorizeCodeSession(ctx, "code", req); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAuthorizeCodeSession(ctx, "code", &Session{}); err != nil {
		t.Fatal(err)
	}
	if err := s.InvalidateAuthorizeCodeSession(ctx, "code"); err != nil {
		t.Fatal(err)
	}
	// fosite needs the request back with the error, to revoke what the code issued.
	r, err := s.GetAuthorizeCodeSession(ctx, "code", &Session{})
	if !errors.Is(err, fosite.ErrInvalidatedAuthorizeCode) || r == nil || r.GetID() != "req-1" {
		t.Errorf("used code: %v, %v; want ErrInvalidatedAuthorizeCode with the request", r, err)
	}
	// An exchange that read the code before another invalidated it must not
	// invalidate it again and issue tokens: the provider revokes on this error.
	if err := s.InvalidateAuthorizeCodeSession(ctx, "code"); !errors.Is(err, fosite.ErrInvalidatedAuthorizeCode) {
		t.Errorf("second invalidation: %v; want ErrInvalidatedAuthorizeCode", err)
	}
}

func testRefreshRotation(t *testing.T, newStore Factory) {
	ctx := context.Background()
	clock := NewClock()
	s := newStore(t, Config{RefreshGracePeriod: 30 * time.Second, Now: clock.Now})
	mustPutClient(t, s, testClient("grafana"))
	req := request(t, s, "req-1", "alice", "", clock.Now())
	if err := s.CreateAccessTokenSession(ctx, "at-1", req); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRefreshTokenSession(ctx, "rt-1", "at-1", req); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAccessTokenSession(ctx, "at-1", &Session{}); err != nil {
		t.Fatal(err)
	}
	if err := s.RotateRefreshToken(ctx, "req-1", "rt-1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAccessTokenSession(ctx, "at-1", &Session{}); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("access token issued with a rotated refresh token: err = %v, want it revoked", err)
	}
	clock.Step(29 * time.Second)
	if r, err := s.GetRefreshTokenSession(ctx, "rt-1", &Session{}); err != nil || r.GetID() != "req-1" {
		t.Errorf("rotated refresh token within the grace period: %v, %v; want it to work, same chain", r, err)
	}
	// Using it again within the grace period does not extend the period.
	if err := s.RotateRefreshToken(ctx, "req-1", "rt-1"); err != nil {
		t.Fatal(err)
	}
	clock.Step(2 * time.Second)
	r, err := s.GetRefreshTokenSession(ctx, "rt-1", &Session{})
	if !errors.Is(err, fosite.ErrInactiveToken) || r == nil || r.GetID() != "req-1" {
		t.Errorf("rotated refresh token after the grace period: %v, %v; want ErrInactiveToken with the request", r, err)
	}

	// With no grace period, a rotated token is inactive at once.
	s0 := newStore(t, Config{Now: clock.Now})
	mustPutClient(t, s0, testClient("grafana"))
	req0 := request(t, s0, "req-2", "alice", "", clock.Now())
	if err := s0.CreateRefreshTokenSession(ctx, "rt-2", "", req0); err != nil {
		t.Fatal(err)
	}
	if err := s0.RotateRefreshToken(ctx, "req-2", "rt-2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s0.GetRefreshTokenSession(ctx, "rt-2", &Session{}); !errors.Is(err, fosite.ErrInactiveToken) {
		t.Errorf("grace 0: err = %v, want ErrInactiveToken", err)
	}
}

func testRevocation(t *testing.T, newStore Factory) {
	ctx := context.Background()
	s := newStore(t, Config{})
	mustPutClient(t, s, testClient("grafana"))
	now := time.Now()
	for i, sig := range []string{"rt-a", "rt-b"} {
		r := request(t, s, "req-1", "alice", "", now)
		if err := s.CreateRefreshTokenSession(ctx, sig, "", r); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateAccessTokenSession(ctx, fmt.Sprintf("at-%d", i), r); err != nil {
			t.Fatal(err)
		}
	}
	other := request(t, s, "req-other", "bob", "", now)
	if err := s.CreateAccessTokenSession(ctx, "at-other", other); err != nil {
		t.Fatal(err)
	}
	// Looked up first, so that a store that caches them must forget them.
	for _, sig := range []string{"at-0", "at-1", "at-other"} {
		if _, err := s.GetAccessTokenSession(ctx, sig, &Session{}); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := s.LastEventSeq(ctx)
	if err := s.RevokeRefreshToken(ctx, "req-1"); err != nil {
		t.Fatal(err)
	}
	if err := s.RevokeAccessToken(ctx, "req-1"); err != nil {
		t.Fatal(err)
	}
	for _, sig := range []string{"rt-a", "rt-b"} {
		if _, err := s.GetRefreshTokenSession(ctx, sig, &Session{}); !errors.Is(err, fosite.ErrNotFound) {
			t.Errorf("refresh token %s after revoking its request: err = %v, want ErrNotFound", sig, err)
		}
	}
	for _, sig := range []string{"at-0", "at-1"} {
		if _, err := s.GetAccessTokenSession(ctx, sig, &Session{}); !errors.Is(err, fosite.ErrNotFound) {
			t.Errorf("access token %s after revoking its request: err = %v, want ErrNotFound", sig, err)
		}
	}
	if _, err := s.GetAccessTokenSession(ctx, "at-other", &Session{}); err != nil {
		t.Errorf("another request's token was revoked too: %v", err)
	}
	evs, err := s.Events(ctx, before, 10)
	if err != nil || len(evs) != 2 || evs[0].Kind != store.EventTokenRevoked || evs[0].RequestID != "req-1" || evs[0].Subject != "alice" {
		t.Errorf("events = %+v, %v; want two token_revoked for req-1", evs, err)
	}
	// Revoking what is already gone is not an error and logs nothing (RFC 7009).
	if err := s.RevokeAccessToken(ctx, "req-1"); err != nil {
		t.Errorf("revoking again: %v", err)
	}
	if last, _ := s.LastEventSeq(ctx); last != evs[len(evs)-1].Seq {
		t.Errorf("revoking nothing logged an event")
	}
}

func testGrants(t *testing.T, newStore Factory) {
	ctx := context.Background()
	s := newStore(t, Config{})
	mustPutClient(t, s, testClient("grafana"))
	g, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: "alice", Scopes: []string{"openid"}, Source: store.SourceBrowser})
	if err != nil {
		t.Fatal(err)
	}
	if g.ID == "" || g.GrantedAt.IsZero() {
		t.Errorf("PutGrant = %+v, want an ID and a grant time", g)
	}
	// A later browser consent for more scopes widens the grant; the ID stays.
	g2, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: "alice", Scopes: []string{"profile"}, Source: store.SourceBrowser})
	if err != nil {
		t.Fatal(err)
	}
	if g2.ID != g.ID || !slices.Equal(g2.Scopes, []string{"openid", "profile"}) {
		t.Errorf("widened grant = %+v, want id %s and scopes openid profile", g2, g.ID)
	}
	// A declared grant replaces the scopes: git is the truth.
	g3, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: "alice", Scopes: []string{"email"}, Source: store.SourceDeclared})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(g3.Scopes, []string{"email"}) || g3.Source != store.SourceDeclared {
		t.Errorf("declared grant = %+v, want exactly email", g3)
	}
	last, _ := s.LastEventSeq(ctx)
	if _, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: "alice", Scopes: []string{"email"}, Source: store.SourceDeclared}); err != nil {
		t.Fatal(err)
	}
	if again, _ := s.LastEventSeq(ctx); again != last {
		t.Errorf("the same declared grant twice logged a second event")
	}
	if _, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "nobody", Subject: "alice", Scopes: []string{"openid"}, Source: store.SourceDeclared}); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("grant for an unknown client: err = %v, want ErrNotFound", err)
	}

	at := time.Now().UTC().Truncate(time.Second)
	if err := s.TouchGrant(ctx, g.ID, at); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetGrant(ctx, "grafana", "alice")
	if err != nil || !got.LastUsedAt.Equal(at) {
		t.Errorf("GetGrant after TouchGrant = %+v, %v; want last used %v", got, err, at)
	}

	// Revoking the grant revokes the tokens issued under it, and only those.
	r := request(t, s, "req-1", "alice", g.ID, time.Now())
	if err := s.CreateAccessTokenSession(ctx, "at-granted", r); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRefreshTokenSession(ctx, "rt-granted", "at-granted", r); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateAccessTokenSession(ctx, "at-cc", request(t, s, "req-2", "", "", time.Now())); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAccessTokenSession(ctx, "at-granted", &Session{}); err != nil {
		t.Fatal(err)
	}
	// The grant counts its live tokens: the access and refresh token issued under it.
	if got, err := s.GetGrant(ctx, "grafana", "alice"); err != nil || got.ActiveTokens != 2 {
		t.Errorf("GetGrant active tokens = %+v, %v; want 2", got, err)
	}
	if gs, err := s.ListGrants(ctx, store.GrantFilter{ClientID: "grafana"}); err != nil || len(gs) != 1 || gs[0].ActiveTokens != 2 {
		t.Errorf("ListGrants = %+v, %v; want one grant with 2 active tokens", gs, err)
	}
	// The consent check's lookup is the same grant, without the count.
	counted, _ := s.GetGrant(ctx, "grafana", "alice")
	if got, err := s.LookupGrant(ctx, "grafana", "alice"); err != nil || got.ActiveTokens != 0 ||
		got.ID != counted.ID || !slices.Equal(got.Scopes, counted.Scopes) || !got.LastUsedAt.Equal(counted.LastUsedAt) {
		t.Errorf("LookupGrant = %+v, %v; want %+v without ActiveTokens", got, err, counted)
	}
	if _, err := s.LookupGrant(ctx, "grafana", "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("LookupGrant of a subject without a grant: %v; want ErrNotFound", err)
	}
	if err := s.RevokeGrant(ctx, "grafana", "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAccessTokenSession(ctx, "at-granted", &Session{}); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("access token under a revoked grant: err = %v, want ErrNotFound", err)
	}
	if _, err := s.GetRefreshTokenSession(ctx, "rt-granted", &Session{}); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("refresh token under a revoked grant: err = %v, want ErrNotFound", err)
	}
	if _, err := s.GetAccessTokenSession(ctx, "at-cc", &Session{}); err != nil {
		t.Errorf("a token outside the grant was revoked: %v", err)
	}
	if err := s.RevokeGrant(ctx, "grafana", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("revoking twice: err = %v, want ErrNotFound", err)
	}
	evs, _ := s.Events(ctx, 0, 100)
	kinds := make([]store.EventKind, 0, len(evs))
	for _, e := range evs {
		kinds = append(kinds, e.Kind)
	}
	want := []store.EventKind{store.EventConsentGiven, store.EventConsentGiven, store.EventConsentGiven, store.EventGrantRevoked}
	if !slices.Equal(kinds, want) {
		t.Errorf("event kinds = %v, want %v", kinds, want)
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].Seq <= evs[i-1].Seq {
			t.Errorf("event seqs not increasing: %d then %d", evs[i-1].Seq, evs[i].Seq)
		}
	}
}

func testJanitor(t *testing.T, newStore Factory) {
	ctx := context.Background()
	s := newStore(t, Config{})
	mustPutClient(t, s, testClient("grafana"))
	past := time.Now().Add(-2 * time.Hour)
	for i := range 25 {
		if err := s.CreateAccessTokenSession(ctx, fmt.Sprintf("old-%d", i), request(t, s, fmt.Sprintf("r%d", i), "", "", past)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateAccessTokenSession(ctx, "fresh", request(t, s, "fresh", "", "", time.Now())); err != nil {
		t.Fatal(err)
	}
	n, err := s.DeleteExpired(ctx, time.Now(), 10)
	if err != nil || n != 10 {
		t.Fatalf("first pass deleted %d (%v), want a batch of 10", n, err)
	}
	total := n
	for n > 0 {
		if n, err = s.DeleteExpired(ctx, time.Now(), 10); err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if total != 25 {
		t.Errorf("janitor deleted %d rows, want the 25 expired ones", total)
	}
	if _, err := s.GetAccessTokenSession(ctx, "fresh", &Session{}); err != nil {
		t.Errorf("janitor deleted a live token: %v", err)
	}
}

func testJTI(t *testing.T, newStore Factory) {
	ctx := context.Background()
	s := newStore(t, Config{})
	exp := time.Now().Add(time.Minute)
	if err := s.ClientAssertionJWTValid(ctx, "jti-1"); err != nil {
		t.Fatalf("unseen jti: %v", err)
	}
	if err := s.SetClientAssertionJWT(ctx, "jti-1", exp); err != nil {
		t.Fatal(err)
	}
	if err := s.ClientAssertionJWTValid(ctx, "jti-1"); !errors.Is(err, fosite.ErrJTIKnown) {
		t.Errorf("replayed jti: err = %v, want ErrJTIKnown", err)
	}
	if err := s.SetClientAssertionJWT(ctx, "jti-1", exp); !errors.Is(err, fosite.ErrJTIKnown) {
		t.Errorf("storing a live jti twice: err = %v, want ErrJTIKnown", err)
	}
}

// Writers append events concurrently while a reader follows with a cursor, as the
// operator's mirror does; the reader must see every event exactly once.
func testConcurrentEvents(t *testing.T, newStore Factory) {
	ctx := context.Background()
	s := newStore(t, Config{})
	mustPutClient(t, s, testClient("grafana"))
	const writers, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				subject := fmt.Sprintf("user-%d-%d", w, i)
				if _, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: subject,
					Scopes: []string{"openid"}, Source: store.SourceBrowser}); err != nil {
					errs <- err
				}
			}
		})
	}
	seen := map[int64]bool{}
	var cursor int64
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		default:
		}
		evs, err := s.Events(ctx, cursor, 7)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range evs {
			if seen[e.Seq] {
				t.Fatalf("event %d seen twice", e.Seq)
			}
			seen[e.Seq] = true
			cursor = e.Seq
		}
		if finished && len(evs) > 0 {
			finished = false // drain
		}
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(seen) != writers*each {
		t.Errorf("a cursor reader saw %d events, want %d: an event committed behind the cursor was skipped", len(seen), writers*each)
	}
}

func testConcurrentPut(t *testing.T, newStore Factory) {
	ctx := context.Background()
	s := newStore(t, Config{})
	mustPutClient(t, s, testClient("grafana"))
	c := testClient("grafana")
	c.Scopes = []string{"openid", "email"}
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		changed int
	)
	for range 16 {
		wg.Go(func() {
			ch, err := s.PutClient(ctx, c)
			if err != nil {
				t.Error(err)
			}
			if ch {
				mu.Lock()
				changed++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if changed != 1 {
		t.Errorf("16 identical concurrent PUTs reported %d changes, want exactly 1", changed)
	}
}

// Many refreshes with one token at once: the rotation happens once, every caller's
// storage calls succeed, and within the grace period the token still resolves.
func testConcurrentRotation(t *testing.T, newStore Factory) {
	ctx := context.Background()
	clock := NewClock()
	s := newStore(t, Config{RefreshGracePeriod: time.Minute, Now: clock.Now})
	mustPutClient(t, s, testClient("grafana"))
	req := request(t, s, "req-1", "alice", "", clock.Now())
	if err := s.CreateRefreshTokenSession(ctx, "rt", "", req); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			if _, err := s.GetRefreshTokenSession(ctx, "rt", &Session{}); err != nil {
				t.Errorf("GetRefreshTokenSession: %v", err)
			}
			if err := s.RotateRefreshToken(ctx, "req-1", "rt"); err != nil {
				t.Errorf("RotateRefreshToken: %v", err)
			}
		})
	}
	wg.Wait()
	if _, err := s.GetRefreshTokenSession(ctx, "rt", &Session{}); err != nil {
		t.Errorf("within the grace period after concurrent rotation: %v", err)
	}
}

// grantRequest is request under grant g, granted scopes, with the grant's expiry on
// the session as the token server puts it there.
func grantRequest(t *testing.T, s oauth.Storage, requestID string, g *store.ConsentGrant, now time.Time, scopes ...string) *fosite.Request {
	t.Helper()
	r := request(t, s, requestID, g.Subject, g.ID, now)
	r.Session.(*Session).GrantExpiresAt = g.ExpiresAt
	r.GrantedScope = scopes
	return r
}

func eventKinds(t *testing.T, s oauth.Storage, after int64) ([]store.Event, []store.EventKind) {
	t.Helper()
	evs, err := s.Events(context.Background(), after, 100)
	if err != nil {
		t.Fatal(err)
	}
	kinds := make([]store.EventKind, 0, len(evs))
	for _, e := range evs {
		kinds = append(kinds, e.Kind)
	}
	return evs, kinds
}

// A grant's expiry ends its tokens: no token issued under it lives past it, a token
// looked up (and cached) before is refused after it even before the janitor runs,
// and the janitor then revokes the grant exactly as RevokeGrant does, logged.
func testGrantExpiry(t *testing.T, newStore Factory) {
	ctx := context.Background()
	clock := NewClock()
	s := newStore(t, Config{Now: clock.Now})
	mustPutClient(t, s, testClient("grafana"))
	start := clock.Now()
	g, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: "alice", Scopes: []string{"openid"},
		Source: store.SourceDeclared, ExpiresAt: start.Add(30 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	r := grantRequest(t, s, "req-1", g, start, "openid")
	for _, create := range []func() error{
		func() error { return s.CreateAuthorizeCodeSession(ctx, "code-1", r) },
		func() error { return s.CreateAccessTokenSession(ctx, "at-1", r) },
		func() error { return s.CreateRefreshTokenSession(ctx, "rt-1", "at-1", r) },
	} {
		if err := create(); err != nil {
			t.Fatal(err)
		}
	}
	// Issuance: the hour-long access token and 30-day refresh token end with the grant.
	sess := &Session{}
	if _, err := s.GetRefreshTokenSession(ctx, "rt-1", sess); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []fosite.TokenType{fosite.AccessToken, fosite.RefreshToken} {
		if got := sess.GetExpiresAt(tt); !got.Equal(g.ExpiresAt) {
			t.Errorf("%s expires at %v, want the grant's expiry %v", tt, got, g.ExpiresAt)
		}
	}
	if got := sess.GetExpiresAt(fosite.AuthorizeCode); !got.Equal(start.Add(10 * time.Minute)) {
		t.Errorf("a code that ends before the grant was changed: expires %v", got)
	}
	if _, err := s.GetAccessTokenSession(ctx, "at-1", &Session{}); err != nil {
		t.Fatal(err) // cached now, in a store that caches
	}

	// At expiry, before any janitor: every token of the grant is refused.
	clock.Step(30 * time.Minute)
	if _, err := s.GetAccessTokenSession(ctx, "at-1", &Session{}); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("access token at its grant's expiry: err = %v, want ErrNotFound", err)
	}
	if _, err := s.GetRefreshTokenSession(ctx, "rt-1", &Session{}); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("refresh token at its grant's expiry: err = %v, want ErrNotFound (not inactive: no reuse to punish)", err)
	}
	if _, err := s.GetAuthorizeCodeSession(ctx, "code-1", &Session{}); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("code at its grant's expiry: err = %v, want ErrNotFound", err)
	}

	// The janitor revokes it as a delete would: grant and tokens gone, logged.
	before, _ := s.LastEventSeq(ctx)
	if _, err := s.DeleteExpired(ctx, clock.Now(), 100); err != nil {
		t.Fatal(err)
	}
	evs, kinds := eventKinds(t, s, before)
	if !slices.Equal(kinds, []store.EventKind{store.EventGrantRevoked}) || evs[0].GrantID != g.ID || evs[0].Subject != "alice" ||
		evs[0].ClientID != "grafana" {
		t.Errorf("events of the janitor = %+v, want one grant_revoked for %s", evs, g.ID)
	}
	if _, err := s.GetGrant(ctx, "grafana", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("expired grant after the janitor: err = %v, want ErrNotFound", err)
	}
	if err := s.RevokeGrant(ctx, "grafana", "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleting an expired grant after the janitor: err = %v, want ErrNotFound", err)
	}

	// A grant whose expiry is moved earlier: a token looked up before is refused from
	// the new expiry on.
	g2, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: "bob", Scopes: []string{"openid"},
		Source: store.SourceDeclared})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateAccessTokenSession(ctx, "at-2", grantRequest(t, s, "req-2", g2, clock.Now(), "openid")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetAccessTokenSession(ctx, "at-2", &Session{}); err != nil {
		t.Fatal(err)
	}
	g2.ExpiresAt = clock.Now().Add(10 * time.Minute)
	if _, err := s.PutGrant(ctx, g2); err != nil {
		t.Fatal(err)
	}
	clock.Step(10 * time.Minute)
	if _, err := s.GetAccessTokenSession(ctx, "at-2", &Session{}); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("access token after its grant's shortened expiry: err = %v, want ErrNotFound", err)
	}

	// Consent again on an expired grant, before the janitor: the old grant is revoked
	// (logged) and a new one stands; the old tokens stay dead.
	before, _ = s.LastEventSeq(ctx)
	g3, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: "bob", Scopes: []string{"openid"},
		Source: store.SourceBrowser})
	if err != nil {
		t.Fatal(err)
	}
	if g3.ID == g2.ID || !g3.ExpiresAt.IsZero() {
		t.Errorf("consent on an expired grant = %+v; want a new grant (not %s) without expiry", g3, g2.ID)
	}
	if evs, kinds := eventKinds(t, s, before); !slices.Equal(kinds, []store.EventKind{store.EventGrantRevoked, store.EventConsentGiven}) ||
		evs[0].GrantID != g2.ID {
		t.Errorf("events = %+v; want grant_revoked for %s then consent_given", evs, g2.ID)
	}
	if _, err := s.GetAccessTokenSession(ctx, "at-2", &Session{}); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("a token of the expired grant came back with the new consent: err = %v", err)
	}

	// A declared grant put with an expiry already past (reconciled after it) revokes
	// the standing grant at once and stores nothing; putting it again does nothing.
	if err := s.CreateAccessTokenSession(ctx, "at-3", grantRequest(t, s, "req-3", g3, clock.Now(), "openid")); err != nil {
		t.Fatal(err)
	}
	expired := &store.ConsentGrant{ClientID: "grafana", Subject: "bob", Scopes: []string{"openid"}, Source: store.SourceDeclared,
		ExpiresAt: clock.Now().Add(-time.Second)}
	before, _ = s.LastEventSeq(ctx)
	for range 2 {
		got, err := s.PutGrant(ctx, expired)
		if err != nil || got.ID != "" {
			t.Errorf("PutGrant of an expired grant = %+v, %v; want nothing stored", got, err)
		}
	}
	if evs, kinds := eventKinds(t, s, before); !slices.Equal(kinds, []store.EventKind{store.EventGrantRevoked}) || evs[0].GrantID != g3.ID {
		t.Errorf("events = %+v; want one grant_revoked for %s", evs, g3.ID)
	}
	if _, err := s.GetAccessTokenSession(ctx, "at-3", &Session{}); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("a token of a grant put expired: err = %v, want ErrNotFound", err)
	}
	if _, err := s.GetGrant(ctx, "grafana", "bob"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a grant put expired was stored: err = %v", err)
	}
}

// Narrowing a declared grant revokes the tokens whose scopes the new set no longer
// covers, and only those; a browser consent that widens revokes nothing.
func testGrantNarrowing(t *testing.T, newStore Factory) {
	ctx := context.Background()
	s := newStore(t, Config{})
	mustPutClient(t, s, testClient("grafana"))
	g, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: "alice",
		Scopes: []string{"email", "openid", "profile"}, Source: store.SourceDeclared})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tokens := map[string][]string{"a": {"openid"}, "b": {"openid", "profile"}, "c": {"email", "openid"}}
	for name, scopes := range tokens {
		r := grantRequest(t, s, "req-"+name, g, now, scopes...)
		if err := s.CreateAccessTokenSession(ctx, "at-"+name, r); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateRefreshTokenSession(ctx, "rt-"+name, "at-"+name, r); err != nil {
			t.Fatal(err)
		}
		if _, err := s.GetAccessTokenSession(ctx, "at-"+name, &Session{}); err != nil {
			t.Fatal(err)
		}
	}
	live := func(name string) bool {
		_, errA := s.GetAccessTokenSession(ctx, "at-"+name, &Session{})
		_, errR := s.GetRefreshTokenSession(ctx, "rt-"+name, &Session{})
		if (errA == nil) != (errR == nil) {
			t.Errorf("tokens of req-%s: access %v, refresh %v; want both or neither", name, errA, errR)
		}
		return errA == nil
	}
	check := func(step string, want map[string]bool) {
		t.Helper()
		for name, w := range want {
			if got := live(name); got != w {
				t.Errorf("%s: tokens of req-%s (scopes %v) live = %v, want %v", step, name, tokens[name], got, w)
			}
		}
	}
	before, _ := s.LastEventSeq(ctx)
	if _, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: "alice", Scopes: []string{"openid", "profile"},
		Source: store.SourceDeclared}); err != nil {
		t.Fatal(err)
	}
	check("narrowed to openid profile", map[string]bool{"a": true, "b": true, "c": false})
	evs, kinds := eventKinds(t, s, before)
	if !slices.Equal(kinds, []store.EventKind{store.EventTokenRevoked, store.EventConsentGiven}) || evs[0].RequestID != "req-c" ||
		!slices.Equal(evs[1].Scopes, []string{"openid", "profile"}) {
		t.Errorf("events = %+v; want token_revoked for req-c, then consent_given openid profile", evs)
	}
	// A browser consent widens: nothing is revoked.
	if _, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: "alice", Scopes: []string{"email"},
		Source: store.SourceBrowser}); err != nil {
		t.Fatal(err)
	}
	check("widened by a browser consent", map[string]bool{"a": true, "b": true})
	if _, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: "alice", Scopes: []string{"openid"},
		Source: store.SourceDeclared}); err != nil {
		t.Fatal(err)
	}
	check("narrowed to openid", map[string]bool{"a": true, "b": false})
}

// First-party approvals are stored only while the client skips consent, never pass
// as anyone's consent, and end, with their tokens and logged, when a PUT turns
// skipConsent off; users' own consents and declared grants stay.
func testFirstPartyApprovals(t *testing.T, newStore Factory) {
	ctx := context.Background()
	s := newStore(t, Config{})
	c := testClient("grafana")
	c.SkipConsent = true
	mustPutClient(t, s, c)
	put := func(subject, source string, scopes ...string) *store.ConsentGrant {
		t.Helper()
		g, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: subject, Scopes: scopes, Source: source})
		if err != nil {
			t.Fatalf("PutGrant(%s, %s): %v", subject, source, err)
		}
		return g
	}
	issue := func(g *store.ConsentGrant, scopes ...string) {
		t.Helper()
		r := grantRequest(t, s, "req-"+g.Subject, g, time.Now(), scopes...)
		if err := s.CreateAccessTokenSession(ctx, "at-"+g.Subject, r); err != nil {
			t.Fatal(err)
		}
		if err := s.CreateRefreshTokenSession(ctx, "rt-"+g.Subject, "at-"+g.Subject, r); err != nil {
			t.Fatal(err)
		}
	}
	grant := func(subject string) *store.ConsentGrant {
		t.Helper()
		g, err := s.GetGrant(ctx, "grafana", subject)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	live := func(subject string) bool {
		_, errA := s.GetAccessTokenSession(ctx, "at-"+subject, &Session{})
		_, errR := s.GetRefreshTokenSession(ctx, "rt-"+subject, &Session{})
		if (errA == nil) != (errR == nil) {
			t.Errorf("tokens of %s: access %v, refresh %v; want both or neither", subject, errA, errR)
		}
		return errA == nil
	}

	alice := put("alice", store.SourceFirstParty, "openid")
	issue(alice, "openid")
	if alice.Source != store.SourceFirstParty {
		t.Errorf("first-party approval stored as %q", alice.Source)
	}
	issue(put("bob", store.SourceBrowser, "openid"), "openid")
	issue(put("carol", store.SourceDeclared, "openid"), "openid")
	// A first-party approval within a user's consent leaves it the user's.
	if g := put("bob", store.SourceFirstParty, "openid"); g.Source != store.SourceBrowser {
		t.Errorf("a first-party approval inside bob's consent made it %q; want browser", g.Source)
	}
	// One that widens a user's consent or a declared grant makes the whole grant
	// first-party: the widened part was never consented to.
	put("erin", store.SourceBrowser, "openid")
	if g := put("erin", store.SourceFirstParty, "profile"); g.Source != store.SourceFirstParty ||
		!slices.Equal(g.Scopes, []string{"openid", "profile"}) {
		t.Errorf("first-party widening erin's consent = %s %v; want first_party [openid profile]", g.Source, g.Scopes)
	}
	issue(grant("erin"), "openid", "profile")

	before, _ := s.LastEventSeq(ctx)
	c.SkipConsent = false
	if changed, err := s.PutClient(ctx, c); err != nil || !changed {
		t.Fatalf("PutClient(skipConsent off) = %v, %v", changed, err)
	}
	for subject, want := range map[string]bool{"alice": false, "erin": false, "bob": true, "carol": true} {
		if got := grant(subject) != nil; got != want {
			t.Errorf("after skipConsent went off, %s's grant stands = %v, want %v", subject, got, want)
		}
		if got := live(subject); got != want {
			t.Errorf("after skipConsent went off, %s's tokens live = %v, want %v", subject, got, want)
		}
	}
	evs, _ := eventKinds(t, s, before)
	revoked := map[string]bool{}
	for _, ev := range evs {
		if ev.Kind == store.EventGrantRevoked {
			revoked[ev.Subject] = true
		}
	}
	if len(revoked) != 2 || !revoked["alice"] || !revoked["erin"] {
		t.Errorf("events after skipConsent went off = %+v; want grant_revoked for alice and erin", evs)
	}
	if _, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: "alice", Scopes: []string{"openid"},
		Source: store.SourceFirstParty}); !errors.Is(err, store.ErrNotFirstParty) {
		t.Errorf("a first-party approval for a client without skipConsent: err = %v, want ErrNotFirstParty", err)
	}
	if grant("alice") != nil {
		t.Error("a refused first-party approval was stored")
	}

	// A user's consent on a first-party approval is for what they were shown only.
	c.SkipConsent = true
	mustPutClient(t, s, c)
	frank := put("frank", store.SourceFirstParty, "openid", "profile")
	issue(frank, "openid", "profile")
	if g := put("frank", store.SourceBrowser, "openid"); g.Source != store.SourceBrowser || !slices.Equal(g.Scopes, []string{"openid"}) {
		t.Errorf("frank's consent on a first-party approval = %s %v; want browser [openid]", g.Source, g.Scopes)
	}
	if live("frank") {
		t.Error("a profile token of a first-party approval outlived the user's consent to openid only")
	}
}

// First-party approvals racing the PUT that turns skipConsent off: whichever order
// they commit in, none stands afterwards.
func testConcurrentFirstPartyEnd(t *testing.T, newStore Factory) {
	ctx := context.Background()
	s := newStore(t, Config{})
	c := testClient("grafana")
	for round := range 40 {
		c.SkipConsent, c.Name = true, fmt.Sprintf("Grafana %d", round)
		mustPutClient(t, s, c)
		off := *c
		off.SkipConsent = false
		var wg sync.WaitGroup
		for i := range 4 {
			wg.Go(func() {
				_, err := s.PutGrant(ctx, &store.ConsentGrant{ClientID: "grafana", Subject: fmt.Sprintf("user-%d-%d", round, i),
					Scopes: []string{"openid"}, Source: store.SourceFirstParty})
				if err != nil && !errors.Is(err, store.ErrNotFirstParty) {
					t.Error(err)
				}
			})
		}
		wg.Go(func() {
			if _, err := s.PutClient(ctx, &off); err != nil {
				t.Error(err)
			}
		})
		wg.Wait()
		grants, err := s.ListGrants(ctx, store.GrantFilter{ClientID: "grafana"})
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range grants {
			if g.Source == store.SourceFirstParty {
				t.Fatalf("round %d: first-party approval of %s stands after skipConsent went off", round, g.Subject)
			}
		}
	}
}

// A token cannot be stored for a client that no longer exists, whatever a replica's
// cached copy of the client says.
func testDeletedClientGetsNoToken(t *testing.T, newStore Factory) {
	ctx := context.Background()
	s := newStore(t, Config{})
	mustPutClient(t, s, testClient("grafana"))
	r := request(t, s, "req-1", "", "", time.Now())
	if err := s.DeleteClient(ctx, "grafana", ""); err != nil {
		t.Fatal(err)
	}
	for name, create := range map[string]func() error{
		"access token":  func() error { return s.CreateAccessTokenSession(ctx, "at", r) },
		"refresh token": func() error { return s.CreateRefreshTokenSession(ctx, "rt", "at", r) },
		"code":          func() error { return s.CreateAuthorizeCodeSession(ctx, "code", r) },
	} {
		if err := create(); !errors.Is(err, store.ErrClientGone) {
			t.Errorf("%s for a deleted client: err = %v, want ErrClientGone", name, err)
		}
	}
}

// A sign-in session is found until it ends or expires, and then never again; ending
// one session leaves the others alone, and ending twice is no error.
func testSignInSessions(t *testing.T, newStore Factory) {
	ctx := context.Background()
	clock := NewClock()
	s := newStore(t, Config{Now: clock.Now})
	now := clock.Now()
	alice := &store.SignInSession{ID: "session-alice", Subject: "alice", CreatedAt: now, ExpiresAt: now.Add(12 * time.Hour)}
	bob := &store.SignInSession{ID: "session-bob", Subject: "bob", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	carol := &store.SignInSession{ID: "session-carol", Subject: "upstream:carol", CreatedAt: now, ExpiresAt: now.Add(time.Hour),
		Identity: []byte(`{"email":"carol@example.com","groups":["ops"]}`)}
	for _, ss := range []*store.SignInSession{alice, bob, carol} {
		if err := s.CreateSignInSession(ctx, ss); err != nil {
			t.Fatalf("CreateSignInSession(%s): %v", ss.ID, err)
		}
	}
	if err := s.CreateSignInSession(ctx, &store.SignInSession{ID: "session-alice", Subject: "mallory", CreatedAt: now,
		ExpiresAt: now.Add(time.Hour)}); err == nil {
		t.Error("a second session with the same ID was stored")
	}
	got, err := s.GetSignInSession(ctx, "session-alice")
	if err != nil || got.Subject != "alice" || !got.CreatedAt.Equal(alice.CreatedAt) || !got.ExpiresAt.Equal(alice.ExpiresAt) {
		t.Fatalf("GetSignInSession(alice) = %+v, %v; want %+v", got, err, alice)
	}
	if got.Identity != nil {
		t.Errorf("alice's session has identity %q; want none", got.Identity)
	}
	// The upstream provider's account of the user comes back as it went in.
	got, err = s.GetSignInSession(ctx, "session-carol")
	if err != nil || !jsonEqual(got.Identity, carol.Identity) {
		t.Fatalf("GetSignInSession(carol) = %+v, %v; want identity %s", got, err, carol.Identity)
	}
	if _, err := s.GetSignInSession(ctx, "no-such-session"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an unknown session: err = %v, want ErrNotFound", err)
	}

	if err := s.EndSignInSession(ctx, "session-alice"); err != nil {
		t.Fatalf("EndSignInSession: %v", err)
	}
	if got, err := s.GetSignInSession(ctx, "session-alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an ended session: %+v, %v; want ErrNotFound", got, err)
	}
	if _, err := s.GetSignInSession(ctx, "session-bob"); err != nil {
		t.Errorf("ending alice's session ended bob's: %v", err)
	}
	for _, id := range []string{"session-alice", "no-such-session"} {
		if err := s.EndSignInSession(ctx, id); err != nil {
			t.Errorf("ending %s, which is gone: %v; want no error", id, err)
		}
	}

	clock.Step(time.Hour - time.Second)
	if _, err := s.GetSignInSession(ctx, "session-bob"); err != nil {
		t.Errorf("a second before its expiry: %v", err)
	}
	clock.Step(time.Second)
	if _, err := s.GetSignInSession(ctx, "session-bob"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("at its expiry: err = %v, want ErrNotFound", err)
	}
}

// The janitor removes expired sign-in sessions in batches and leaves live ones.
func testSignInSessionJanitor(t *testing.T, newStore Factory) {
	ctx := context.Background()
	clock := NewClock()
	s := newStore(t, Config{Now: clock.Now})
	now := clock.Now()
	for i := range 5 {
		if err := s.CreateSignInSession(ctx, &store.SignInSession{ID: fmt.Sprintf("old-%d", i), Subject: "alice",
			CreatedAt: now.Add(-13 * time.Hour), ExpiresAt: now.Add(-time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CreateSignInSession(ctx, &store.SignInSession{ID: "live", Subject: "alice", CreatedAt: now,
		ExpiresAt: now.Add(12 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	n, err := s.DeleteExpired(ctx, now, 2)
	if err != nil || n != 2 {
		t.Fatalf("first pass removed %d (%v), want a batch of 2", n, err)
	}
	total := n
	for n > 0 {
		if n, err = s.DeleteExpired(ctx, now, 2); err != nil {
			t.Fatal(err)
		}
		total += n
	}
	if total != 5 {
		t.Errorf("janitor removed %d sessions, want the 5 expired ones", total)
	}
	if _, err := s.GetSignInSession(ctx, "live"); err != nil {
		t.Errorf("janitor removed a live session: %v", err)
	}
	// The janitor went by the row, not only by GetSignInSession's check: a session
	// created again with an expired one's ID is stored, which a leftover row forbids.
	if err := s.CreateSignInSession(ctx, &store.SignInSession{ID: "old-0", Subject: "alice", CreatedAt: now,
		ExpiresAt: now.Add(time.Hour)}); err != nil {
		t.Errorf("the expired session's row is still there: %v", err)
	}
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}
