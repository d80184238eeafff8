// Package oidcop runs a real, independently written OpenID provider for tests: the
// example server of github.com/zitadel/oidc (an OpenID Certified library), with
// its in-memory storage, its login page, and a groups claim added. The token server
// signs people in through it as it would through a company's identity provider.
package oidcop

import (
	"context"
	"log/slog"
	"net/http"
	"slices"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/text/language"
)

// User is a person who can sign in at the provider.
type User struct {
	// ID is the sub claim.
	ID, Username, Password string
	// FirstName and LastName make the name claim.
	FirstName, LastName string
	Email               string
	EmailVerified       bool
	Groups              []string
}

// Client is an OAuth client of the provider (a web client: client_secret_basic,
// any http or https redirect URI).
type Client struct {
	ID, Secret   string
	RedirectURIs []string
}

// New returns the provider's handler for issuer, which must be the URL it is served
// at (with or without a trailing slash, exactly as clients will name it).
func New(issuer string, users []User, clients []Client, log *slog.Logger) http.Handler {
	us := userStore{byID: map[string]*storage.User{}}
	groups := map[string][]string{}
	for _, u := range users {
		us.byID[u.ID] = &storage.User{ID: u.ID, Username: u.Username, Password: u.Password, FirstName: u.FirstName,
			LastName: u.LastName, Email: u.Email, EmailVerified: u.EmailVerified, PreferredLanguage: language.English}
		groups[u.ID] = u.Groups
	}
	cs := map[string]*storage.Client{}
	for _, c := range clients {
		cs[c.ID] = storage.WebClient(c.ID, c.Secret, c.RedirectURIs...)
	}
	st := &withGroups{Storage: storage.NewStorageWithClients(us, cs), groups: groups}
	return exampleop.SetupServer(issuer, st, log, false)
}

type userStore struct{ byID map[string]*storage.User }

func (u userStore) GetUserByID(id string) *storage.User { return u.byID[id] }

func (u userStore) GetUserByUsername(name string) *storage.User {
	for _, user := range u.byID {
		if user.Username == name {
			return user
		}
	}
	return nil
}

func (u userStore) ExampleClientID() string { return storage.ServiceUserID }

// withGroups adds a groups claim for the groups scope, in the ID token and at
// userinfo, as Keycloak, Dex and Okta do; the example storage has none.
type withGroups struct {
	*storage.Storage
	groups map[string][]string
}

func (s *withGroups) SetUserinfoFromRequest(ctx context.Context, ui *oidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, ui, req, scopes); err != nil {
		return err
	}
	if slices.Contains(scopes, "groups") && len(s.groups[req.GetSubject()]) > 0 {
		ui.AppendClaims("groups", s.groups[req.GetSubject()])
	}
	return nil
}

func (s *withGroups) SetUserinfoFromToken(ctx context.Context, ui *oidc.UserInfo, tokenID, subject, origin string) error {
	if err := s.Storage.SetUserinfoFromToken(ctx, ui, tokenID, subject, origin); err != nil {
		return err
	}
	if len(s.groups[subject]) > 0 {
		ui.AppendClaims("groups", s.groups[subject])
	}
	return nil
}

// GetClientByClientID lets every client ask for the groups scope, which the
// example's clients would otherwise drop.
func (s *withGroups) GetClientByClientID(ctx context.Context, id string) (op.Client, error) {
	c, err := s.Storage.GetClientByClientID(ctx, id)
	if err != nil {
		return nil, err
	}
	return groupsScope{c}, nil
}

type groupsScope struct{ op.Client }

func (c groupsScope) IsScopeAllowed(scope string) bool {
	return scope == "groups" || c.Client.IsScopeAllowed(scope)
}
