// Package store defines what the token server keeps: OAuth clients, consent grants,
// sign-in sessions and the event log (revocations and consents), as the store's own
// plain types, without a database, fosite or the admin API's wire types in sight.
// Store is the fosite-free part of the storage contract that internal/oauth's Storage
// completes; internal/store/postgres implements it; internal/store/storetest is the
// conformance suite an implementation must pass.
package store

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"time"
)

var (
	// ErrNotFound: no such client, grant, token or live sign-in session.
	ErrNotFound = errors.New("not found")
	// ErrUnavailable wraps errors from a database that cannot be reached; the HTTP
	// layer turns it into 503.
	ErrUnavailable = errors.New("database unavailable")
	// ErrOwnerConflict: the client exists with another OwnerNamespace. A client never
	// changes owner through a PUT, and a DELETE that names an owner removes only that
	// owner's client, so one namespace cannot take over or delete another's client.
	// The wrapping error names the current owner; the HTTP layer answers 409.
	ErrOwnerConflict = errors.New("client belongs to another namespace")
	// ErrClientGone: a token was to be stored for a client that no longer exists
	// (deleted through another replica, whose news this one had not heard yet).
	ErrClientGone = errors.New("the client no longer exists")
	// ErrNotFirstParty: a first-party approval was to be stored for a client whose
	// skipConsent is off (a replica's cached copy of the client was behind): the user
	// must be asked instead.
	ErrNotFirstParty = errors.New("the client no longer skips consent")
)

// Client is an OAuth client as the token server keeps it. Secrets are never stored,
// only their hashes. It is the store's own type, apart from the admin API's
// adminapi.Client, so that the wire contract and the schema can change apart; the
// token server converts between them at the admin API.
type Client struct {
	ID string
	// SecretHash is the hash of the current secret; empty for a public client.
	SecretHash []byte
	// PreviousSecretHash is still accepted until PreviousSecretExpiresAt (rotation).
	PreviousSecretHash      []byte
	PreviousSecretExpiresAt time.Time
	// OwnerNamespace is the verified owner: the Kubernetes namespace the client was
	// registered from.
	OwnerNamespace string

	ClientSpec

	CreatedAt time.Time
	UpdatedAt time.Time
}

// ClientSpec is what a client is, apart from its credentials and its owner; an
// implementation may keep it as one document (internal/store/postgres: the
// clients.spec column, whose encoding is that package's).
type ClientSpec struct {
	Name                    string
	OwnerTeam               string
	OwnerContact            string
	LogoURI                 string
	ClientURI               string
	PolicyURI               string
	TOSURI                  string
	GrantTypes              []string
	ResponseTypes           []string
	RedirectURIs            []string
	PostLogoutRedirectURIs  []string
	Scopes                  []string
	Audience                []string
	TokenEndpointAuthMethod string
	// JWKS is a JSON Web Key Set of the client's public keys (private_key_jwt).
	JWKS           json.RawMessage
	JWKSURI        string
	SkipConsent    bool
	TokenLifespans map[string]string
	// JWTBearer is the issuers whose assertions the client may exchange (RFC 7523),
	// an adminapi.JWTBearer document.
	JWTBearer json.RawMessage
}

// Public reports whether the client has no secret (tokenEndpointAuthMethod none).
func (c *Client) Public() bool { return c.TokenEndpointAuthMethod == "none" }

// Grant sources, as stored.
const (
	SourceDeclared = "declared" // pre-approved by the operator
	SourceBrowser  = "browser"  // given by the user on the consent page
	// SourceFirstParty: approved without a consent page because the client had
	// skipConsent; it ends when skipConsent does.
	SourceFirstParty = "first_party"
)

// ConsentGrant is "Subject allowed ClientID these Scopes". Tokens issued under a grant
// carry its ID, so revoking the grant revokes them.
type ConsentGrant struct {
	ID         string
	ClientID   string
	Subject    string
	Scopes     []string
	Source     string
	GrantedAt  time.Time
	LastUsedAt time.Time // zero: never
	ExpiresAt  time.Time // zero: never
	// ActiveTokens counts live access and refresh tokens issued under the grant; set
	// by GetGrant and ListGrants.
	ActiveTokens int
	// Owner, when set on a PutGrant, is a precondition: the client's OwnerNamespace
	// must be it, checked in the write's transaction (ErrOwnerConflict otherwise), so
	// that no namespace writes consent to another's client. It is not stored.
	Owner string
}

// Covers reports whether the grant, valid at now, allows every scope in scopes.
func (g *ConsentGrant) Covers(scopes []string, now time.Time) bool {
	if !g.ExpiresAt.IsZero() && !now.Before(g.ExpiresAt) {
		return false
	}
	have := make(map[string]bool, len(g.Scopes))
	for _, s := range g.Scopes {
		have[s] = true
	}
	for _, s := range scopes {
		if !have[s] {
			return false
		}
	}
	return true
}

// EventKind says what an event of the log records; its value is the stored one
// (events.kind), which the admin API's event kinds need not follow.
type EventKind string

// Event kinds.
const (
	// EventTokenRevoked: one token chain (a request ID).
	EventTokenRevoked EventKind = "token_revoked"
	// EventGrantRevoked: a consent grant and every token under it.
	EventGrantRevoked EventKind = "grant_revoked"
	// EventClientDeleted: a client and every token issued to it.
	EventClientDeleted EventKind = "client_deleted"
	// EventConsentGiven: a consent grant created or changed.
	EventConsentGiven EventKind = "consent_given"
)

// Event is one entry of the event log. Seq is strictly increasing in commit order, so a
// reader that has seen Seq n and asks for everything after n misses nothing.
type Event struct {
	Seq       int64
	At        time.Time
	Kind      EventKind
	ClientID  string
	Subject   string
	GrantID   string
	RequestID string
	Scopes    []string
}

// Store is the storage contract apart from fosite's token storage: internal/oauth's
// Storage adds that, and is the one interface a token-server store implements in
// full (internal/store/storetest runs against it).
type Store interface {
	// Ping checks the storage answers, for readiness.
	Ping(ctx context.Context) error
	// Follow keeps this replica in step with the others until ctx ends: what another
	// replica changed (a client, an ended token) leaves this one's caches, and logged
	// is called after an event is appended to the log, so that a reader waiting for
	// events reads again. When it may have missed news (at start, after losing its
	// connection), it empties the caches and calls logged too. It returns nil when
	// ctx ends, and never gives up before.
	Follow(ctx context.Context, logged func()) error

	// PutClient creates or replaces a client; it reports whether anything changed, so
	// that the same PUT twice is a no-op. Replacing a client whose OwnerNamespace
	// differs from c's fails with ErrOwnerConflict and changes nothing. A PUT that
	// changes a client whose skipConsent is then off revokes, in the same
	// transaction, every SourceFirstParty grant of it as RevokeGrant does (tokens,
	// caches, EventGrantRevoked): approvals nobody was asked for end with the status
	// that allowed them.
	PutClient(ctx context.Context, c *Client) (changed bool, err error)
	GetClientByID(ctx context.Context, id string) (*Client, error)
	// ListClients returns the clients by ID: those after page.After, at most
	// page.Limit of them (0: every one).
	ListClients(ctx context.Context, page Page) ([]*Client, error)
	// DeleteClient removes the client, its grants and every token issued to it, and
	// logs EventClientDeleted. A non-empty owner must be the client's OwnerNamespace,
	// or nothing is deleted and the error is ErrOwnerConflict; an empty owner deletes
	// whoever owns it (an administrator's delete).
	DeleteClient(ctx context.Context, id, owner string) error

	// PutGrant creates the grant for (ClientID, Subject) or updates it, and logs
	// EventConsentGiven when it changed. A browser consent widens the scopes; a
	// declared grant replaces them, and narrowing revokes every token whose scopes
	// the new set does not cover. A grant found expired is revoked first (as
	// RevokeGrant) and a new one created; a grant whose ExpiresAt has passed already
	// revokes the one standing and is not stored (the result has no ID). It returns
	// the stored grant.
	//
	// A SourceFirstParty grant is stored only while the client has skipConsent
	// (checked in the same transaction, so a concurrent PutClient turning it off
	// cannot be overtaken), else ErrNotFirstParty. It widens a standing grant and
	// makes it SourceFirstParty, so that scopes nobody consented to never pass as
	// consent; it leaves alone a grant that already covers it. A browser consent on a
	// SourceFirstParty grant replaces its scopes: the user consented to these only.
	PutGrant(ctx context.Context, g *ConsentGrant) (*ConsentGrant, error)
	// GetGrant returns the grant of subject to clientID with ActiveTokens, which
	// counts the grant's live tokens, or ErrNotFound.
	GetGrant(ctx context.Context, clientID, subject string) (*ConsentGrant, error)
	// LookupGrant is GetGrant without ActiveTokens: for an authorization request's
	// consent check, which must not read every live token of a grant that has many.
	LookupGrant(ctx context.Context, clientID, subject string) (*ConsentGrant, error)
	// GetGrantByID returns the grant with that ID (without ActiveTokens), or
	// ErrNotFound.
	GetGrantByID(ctx context.Context, id string) (*ConsentGrant, error)
	// ListGrants returns the grants matching filter, by client ID then subject:
	// those after (filter.AfterClientID, filter.AfterSubject), at most filter.Limit
	// of them (0: every one).
	ListGrants(ctx context.Context, filter GrantFilter) ([]*ConsentGrant, error)
	// RevokeGrant deletes the grant and every token issued under it, and logs
	// EventGrantRevoked.
	RevokeGrant(ctx context.Context, clientID, subject string) error
	// RevokeOwnedGrant is RevokeGrant on a client of owner namespace owner only: a
	// client of another owner keeps its grant and the error is ErrOwnerConflict,
	// checked in the same transaction as the delete. An empty owner is RevokeGrant.
	RevokeOwnedGrant(ctx context.Context, clientID, subject, owner string) error
	TouchGrant(ctx context.Context, id string, at time.Time) error

	// Events returns up to limit events with Seq > after, oldest first.
	Events(ctx context.Context, after int64, limit int) ([]Event, error)
	// LastEventSeq is the highest Seq committed so far (0 when none).
	LastEventSeq(ctx context.Context) (int64, error)

	// CreateSignInSession records a sign-in session, so that it can be ended on
	// every replica at once.
	CreateSignInSession(ctx context.Context, s *SignInSession) error
	// GetSignInSession returns the session with that ID if it has neither ended nor
	// expired, or ErrNotFound.
	GetSignInSession(ctx context.Context, id string) (*SignInSession, error)
	// EndSignInSession ends the session: from the moment it returns, GetSignInSession
	// answers ErrNotFound on every replica. Ending a session that is gone already is
	// not an error.
	EndSignInSession(ctx context.Context, id string) error

	// DeleteExpired removes up to batch expired or revoked token rows and up to batch
	// expired sign-in sessions, and revokes up to batch expired grants exactly as
	// RevokeGrant does (their tokens, caches and EventGrantRevoked); it returns how
	// many rows it removed.
	DeleteExpired(ctx context.Context, now time.Time, batch int) (int, error)
}

// SignInSession is a person signed in on the token server's pages. The browser's
// cookie names it; the stored row is what makes sign-out final: a copy of the cookie
// is worth nothing once the row has ended.
type SignInSession struct {
	// ID is what the cookie's session ID is stored as (the token server keeps a hash
	// of it, so that the table alone names no usable cookie).
	ID        string
	Subject   string
	CreatedAt time.Time
	ExpiresAt time.Time
	// Identity is what the upstream OpenID provider said of the user at sign-in
	// (JSON, opaque to the store); nil for a user of the users file.
	Identity []byte
}

// GrantFilter selects grants; empty fields match all.
type GrantFilter struct {
	ClientID string
	Subject  string
	// Source: declared or browser.
	Source string
	// AfterClientID and AfterSubject start the list after that grant's place in
	// its order; Limit bounds it (0: no bound).
	AfterClientID, AfterSubject string
	Limit                       int
}

// Page is a part of a list in its order: the items after the key After ("": from
// the first), at most Limit of them (0: every one).
type Page struct {
	After string
	Limit int
}

// SecretHasher hashes client secrets for storage and checks them. A hash is
// HMAC-SHA256 under a server key, prefixed with its kind; a bare 32-byte SHA-256 (what
// versions before the key wrote) is still accepted, so an upgrade locks no client
// out, and is replaced by a keyed hash the next time the operator puts the client.
//
// A keyed hash and not a slow KDF: the operator generates 256-bit random secrets,
// which no dictionary reaches, and a per-request bcrypt caps a core at a few hundred
// tokens per second (Hydra's default hasher: 359 tokens/s on our machines). The key
// is for secrets a person chose (the admin API refuses fewer than MinSecretLength
// characters, but length is not randomness): with the database alone, an attacker
// cannot test guesses against the hashes, nor see that two clients share a secret.
type SecretHasher struct{ key []byte }

// keyedHashPrefix marks a hash made with the server key; the rest is the HMAC.
const keyedHashPrefix = "hmac-sha256:"

// NewSecretHasher returns a hasher keyed with key (32 bytes or more).
func NewSecretHasher(key []byte) (*SecretHasher, error) {
	if len(key) < 32 {
		return nil, errors.New("the client-secret hashing key must be at least 32 bytes")
	}
	return &SecretHasher{key: bytes.Clone(key)}, nil
}

// DeriveSecretHashKey derives a client-secret hashing key from the token server's
// HMAC secret, for servers given no key of their own: every replica already shares
// that secret, and the derivation keeps the two uses apart.
func DeriveSecretHashKey(hmacSecret []byte) []byte {
	mac := hmac.New(sha256.New, hmacSecret)
	mac.Write([]byte("kubeoauth client secret hashing v1"))
	return mac.Sum(nil)
}

// Hash returns the stored form of secret.
func (h *SecretHasher) Hash(secret string) []byte {
	mac := hmac.New(sha256.New, h.key)
	mac.Write([]byte(secret))
	return mac.Sum([]byte(keyedHashPrefix))
}

// Verify reports whether secret matches hash, keyed or legacy, in constant time.
func (h *SecretHasher) Verify(hash []byte, secret string) bool {
	if bytes.HasPrefix(hash, []byte(keyedHashPrefix)) {
		return hmac.Equal(hash, h.Hash(secret))
	}
	if len(hash) == sha256.Size {
		return hmac.Equal(hash, LegacyHashSecret(secret))
	}
	return false
}

// LegacyHashSecret is the unkeyed SHA-256 that versions before the secret hashing key
// stored; Verify still accepts it.
func LegacyHashSecret(secret string) []byte {
	sum := sha256.Sum256([]byte(secret))
	return sum[:]
}

// MinSecretLength is the shortest client secret accepted (32 characters: at least
// 160 bits in any alphabet we generate from).
const MinSecretLength = 32
