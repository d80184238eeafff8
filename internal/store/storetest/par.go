package storetest

import (
	"context"
	"errors"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/ory/fosite"
)

// testPAR: a pushed authorization request reads back as pushed, with what fosite
// resolved (redirect URI, response types, state); it is gone once deleted or
// expired, and the janitor sweeps it at its expiry.
func testPAR(t *testing.T, newStore Factory) {
	ctx := context.Background()
	clock := NewClock()
	s := newStore(t, Config{Now: clock.Now})
	mustPutClient(t, s, testClient("grafana"))
	push := func(uri string, lifespan time.Duration) {
		t.Helper()
		ar := fosite.NewAuthorizeRequest()
		ar.ID, ar.RequestedAt = "par-"+uri, clock.Now()
		c, err := s.GetClient(ctx, "grafana")
		if err != nil {
			t.Fatal(err)
		}
		ar.Client = c
		ar.RequestedScope = fosite.Arguments{"openid"}
		ar.Form = url.Values{"scope": {"openid"}, "code_challenge": {"abc"}, "code_challenge_method": {"S256"}}
		ar.RedirectURI, _ = url.Parse("https://grafana.example.com/cb")
		ar.ResponseTypes, ar.State = fosite.Arguments{"code"}, "st-12345678"
		sess := &fosite.DefaultSession{}
		sess.SetExpiresAt(fosite.PushedAuthorizeRequestContext, clock.Now().Add(lifespan))
		ar.Session = sess
		if err := s.CreatePARSession(ctx, uri, ar); err != nil {
			t.Fatal(err)
		}
	}
	push("urn:a", time.Minute)
	got, err := s.GetPARSession(ctx, "urn:a")
	if err != nil {
		t.Fatal(err)
	}
	if got.GetID() != "par-urn:a" || got.GetClient().GetID() != "grafana" || got.GetState() != "st-12345678" ||
		got.GetRedirectURI().String() != "https://grafana.example.com/cb" || !slices.Equal(got.GetResponseTypes(), fosite.Arguments{"code"}) ||
		got.GetRequestForm().Get("code_challenge") != "abc" || !slices.Equal(got.GetRequestedScopes(), fosite.Arguments{"openid"}) ||
		!got.GetSession().GetExpiresAt(fosite.PushedAuthorizeRequestContext).Equal(clock.Now().Add(time.Minute)) {
		t.Errorf("GetPARSession = %+v, want the request as pushed", got)
	}
	if err := s.DeletePARSession(ctx, "urn:a"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetPARSession(ctx, "urn:a"); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("deleted request: err = %v, want fosite.ErrNotFound", err)
	}
	push("urn:b", time.Minute)
	push("urn:c", time.Hour)
	clock.Step(time.Minute)
	if _, err := s.GetPARSession(ctx, "urn:b"); !errors.Is(err, fosite.ErrNotFound) {
		t.Errorf("expired request: err = %v, want fosite.ErrNotFound", err)
	}
	if n, err := s.DeleteExpired(ctx, clock.Now().Add(time.Second), 10); err != nil || n != 1 {
		t.Errorf("janitor deleted %d (%v), want the one expired request", n, err)
	}
	if _, err := s.GetPARSession(ctx, "urn:c"); err != nil {
		t.Errorf("janitor deleted a live request: %v", err)
	}
}
