package tokenserver

import (
	"time"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/store"
)

// The admin API's types (internal/adminapi, the operator's contract) and the store's
// (the schema) meet here and nowhere else, so that either can change without the
// other. Client metadata converts as a whole while both sides have the same fields;
// when one side gains or renames a field, the conversion stops compiling and the
// field-by-field mapping belongs here.

func toStoreClient(id string, in *adminapi.Client, h *store.SecretHasher) *store.Client {
	c := &store.Client{ID: id, OwnerNamespace: in.OwnerNamespace, ClientSpec: store.ClientSpec(in.ClientMetadata)}
	if in.Secret != "" {
		c.SecretHash = h.Hash(in.Secret)
	}
	if in.PreviousSecret != "" {
		c.PreviousSecretHash = h.Hash(in.PreviousSecret)
		c.PreviousSecretExpiresAt = in.PreviousSecretExpiresAt.UTC().Truncate(time.Microsecond)
	}
	return c
}

// fromStoreClient leaves out the secrets: the store has only their hashes, and the
// admin API never answers with either.
func fromStoreClient(c *store.Client) adminapi.Client {
	return adminapi.Client{ID: c.ID, OwnerNamespace: c.OwnerNamespace, ClientMetadata: adminapi.ClientMetadata(c.ClientSpec)}
}

// apiNames maps the store's grant sources and event kinds to the admin API's. A
// value the API has no name for passes through as stored.
var apiNames = map[string]string{
	store.SourceDeclared:   adminapi.SourceDeclared,
	store.SourceBrowser:    adminapi.SourceBrowser,
	store.SourceFirstParty: adminapi.SourceFirstParty,
}

// apiKinds are the admin API's names of the store's event kinds; a kind the API has
// no name for passes through as stored.
var apiKinds = map[store.EventKind]string{
	store.EventTokenRevoked:  adminapi.EventTokenRevoked,
	store.EventGrantRevoked:  adminapi.EventGrantRevoked,
	store.EventClientDeleted: adminapi.EventClientDeleted,
	store.EventConsentGiven:  adminapi.EventConsentGiven,
}

// storeSources are the grant sources a caller of the admin API may give; first_party
// is in answers only.
var storeSources = map[string]string{
	adminapi.SourceDeclared: store.SourceDeclared,
	adminapi.SourceBrowser:  store.SourceBrowser,
}

func apiName(stored string) string {
	if n, ok := apiNames[stored]; ok {
		return n
	}
	return stored
}

func apiKind(stored store.EventKind) string {
	if n, ok := apiKinds[stored]; ok {
		return n
	}
	return string(stored)
}

func toAPIGrant(g *store.ConsentGrant) adminapi.Grant {
	out := adminapi.Grant{ID: g.ID, ClientID: g.ClientID, Subject: g.Subject, Scopes: g.Scopes, Source: apiName(g.Source),
		ActiveTokens: g.ActiveTokens}
	t := func(v time.Time) *time.Time {
		if v.IsZero() {
			return nil
		}
		return &v
	}
	out.GrantedAt, out.LastUsedAt, out.ExpiresAt = t(g.GrantedAt), t(g.LastUsedAt), t(g.ExpiresAt)
	return out
}

func toAPIEvent(e store.Event) adminapi.Event {
	return adminapi.Event{Seq: e.Seq, At: e.At, Kind: apiKind(e.Kind), ClientID: e.ClientID, Subject: e.Subject,
		GrantID: e.GrantID, RequestID: e.RequestID, Scopes: e.Scopes}
}
