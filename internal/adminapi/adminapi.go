// Package adminapi is the contract between the operator and the token server: the
// admin API's request and response types and a Go client for it. Neither side reaches
// into the other's packages; they share only this one. docs/admin-api.md describes the
// HTTP API.
package adminapi

import (
	"encoding/json"
	"time"
)

// Client is an OAuth client as the operator registers it (PUT /admin/clients/{id}).
type Client struct {
	ID string `json:"id"`
	// Secret is the client secret in plain text (stored hashed); empty for public
	// clients. At least 32 characters.
	Secret string `json:"secret,omitempty"`
	// PreviousSecret still works until PreviousSecretExpiresAt (rotation overlap).
	PreviousSecret          string     `json:"previousSecret,omitempty"`
	PreviousSecretExpiresAt *time.Time `json:"previousSecretExpiresAt,omitempty"`
	// OwnerNamespace is the verified owner: the namespace the OAuthClient lives in.
	OwnerNamespace string `json:"ownerNamespace"`

	ClientMetadata
}

// ClientMetadata is what a client is, apart from its credentials and its verified
// owner: the fields the operator copies from an OAuthClient's spec. The token server
// converts it to its store's own type (internal/tokenserver/adminconv.go), so that a
// field here and a column there change apart.
type ClientMetadata struct {
	Name                    string            `json:"name"`
	OwnerTeam               string            `json:"ownerTeam,omitempty"`
	OwnerContact            string            `json:"ownerContact,omitempty"`
	LogoURI                 string            `json:"logoURI,omitempty"`
	ClientURI               string            `json:"clientURI,omitempty"`
	PolicyURI               string            `json:"policyURI,omitempty"`
	TOSURI                  string            `json:"tosURI,omitempty"`
	GrantTypes              []string          `json:"grantTypes"`
	ResponseTypes           []string          `json:"responseTypes,omitempty"`
	RedirectURIs            []string          `json:"redirectURIs,omitempty"`
	PostLogoutRedirectURIs  []string          `json:"postLogoutRedirectURIs,omitempty"`
	Scopes                  []string          `json:"scopes,omitempty"`
	Audience                []string          `json:"audience,omitempty"`
	TokenEndpointAuthMethod string            `json:"tokenEndpointAuthMethod"`
	JWKS                    json.RawMessage   `json:"jwks,omitempty"` // a JSON Web Key Set of public keys
	JWKSURI                 string            `json:"jwksURI,omitempty"`
	SkipConsent             bool              `json:"skipConsent,omitempty"`
	TokenLifespans          map[string]string `json:"tokenLifespans,omitempty"`
	// JWTBearer is a JWTBearer document: the issuers whose assertions the client
	// may exchange (RFC 7523). Raw, like JWKS, so the store keeps it as given.
	JWTBearer json.RawMessage `json:"jwtBearer,omitempty"`
}

// JWTBearer is the trust behind a client's JWT bearer grant (the OAuthClient's
// spec.jwtBearer).
type JWTBearer struct {
	TrustedIssuers []TrustedJWTIssuer `json:"trustedIssuers"`
}

// TrustedJWTIssuer is one issuer of assertions: its keys (JWKS, a JSON Web Key Set,
// or JWKSURI), the subjects it may assert (or any) and the scopes it may give.
type TrustedJWTIssuer struct {
	Issuer          string          `json:"issuer"`
	JWKS            json.RawMessage `json:"jwks,omitempty"`
	JWKSURI         string          `json:"jwksURI,omitempty"`
	Subjects        []string        `json:"subjects,omitempty"`
	AllowAnySubject bool            `json:"allowAnySubject,omitempty"`
	Scopes          []string        `json:"scopes,omitempty"`
}

// ClientStatus is what GET returns for a client: everything but secrets, plus
// whether the PUT changed anything.
type ClientStatus struct {
	Client
	Changed   bool      `json:"changed"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// Grant is a consent grant (PUT /admin/grants/{clientID}/{subject}).
type Grant struct {
	ClientID   string     `json:"clientID"`
	Subject    string     `json:"subject"`
	Scopes     []string   `json:"scopes"`
	Source     string     `json:"source,omitempty"` // declared (default for PUT) or browser; first_party in answers only
	GrantedAt  *time.Time `json:"grantedAt,omitempty"`
	LastUsedAt *time.Time `json:"lastUsedAt,omitempty"`
	ExpiresAt  *time.Time `json:"expiresAt,omitempty"`
	ID         string     `json:"id,omitempty"`
	// ActiveTokens counts live access and refresh tokens issued under the grant.
	ActiveTokens int `json:"activeTokens"`
}

// Token endpoint authentication methods, as ClientMetadata.TokenEndpointAuthMethod
// carries them (the same strings as the OAuthClient API and RFC 7591).
const (
	AuthClientSecretBasic = "client_secret_basic"
	AuthClientSecretPost  = "client_secret_post"
	AuthPrivateKeyJWT     = "private_key_jwt"
	AuthNone              = "none"
)

// Grant sources.
const (
	SourceDeclared = "declared" // pre-approved, from a ConsentGrant in git
	SourceBrowser  = "browser"  // given by the user on the consent page
	// SourceFirstParty: approved without a consent page because the client had
	// skipConsent. It is not the user's consent: it ends when skipConsent does.
	SourceFirstParty = "first_party"
)

// Event kinds of the log.
const (
	EventTokenRevoked  = "token_revoked"  // one token chain (a request ID)
	EventGrantRevoked  = "grant_revoked"  // a consent grant and every token under it
	EventClientDeleted = "client_deleted" // a client and every token issued to it
	EventConsentGiven  = "consent_given"  // a consent grant created or changed
)

// Event is an entry of the revocation and consent log.
type Event struct {
	Seq       int64     `json:"seq"`
	At        time.Time `json:"at"`
	Kind      string    `json:"kind"`
	ClientID  string    `json:"clientID,omitempty"`
	Subject   string    `json:"subject,omitempty"`
	GrantID   string    `json:"grantID,omitempty"`
	RequestID string    `json:"requestID,omitempty"`
	Scopes    []string  `json:"scopes,omitempty"`
}

// Events is the answer to GET /admin/events.
type Events struct {
	Events []Event `json:"events"`
	// Next is the cursor for the next call (the last Seq returned, or the one given).
	Next int64 `json:"next"`
}

// Error is every error body: {"error": "...", "field": "..."}.
type Error struct {
	Message string `json:"error"`
	Field   string `json:"field,omitempty"`
}

func (e *Error) Error() string {
	if e.Field != "" {
		return e.Field + ": " + e.Message
	}
	return e.Message
}

// VerifyClientIDPrefix starts the ID of every temporary client `tokenserver verify`
// registers, and only POST /admin/verify/authorize serves clients with it.
const VerifyClientIDPrefix = "kubeoauth-verify-"

// VerifySubject is the subject of every code POST /admin/verify/authorize issues:
// fixed, so that the endpoint can never speak for a user.
const VerifySubject = "system:kubeoauth:verify"

// VerifyAuthorizeRequest is the body of POST /admin/verify/authorize: the parameters
// of an authorization request (RFC 6749 4.1.1 with PKCE, RFC 7636), which the server
// validates as it validates one from a browser. There is no subject field, and an
// unknown field is refused.
type VerifyAuthorizeRequest struct {
	ClientID            string `json:"clientID"`
	RedirectURI         string `json:"redirectURI"`
	Scope               string `json:"scope"` // space-separated, as in the authorization request
	State               string `json:"state"`
	CodeChallenge       string `json:"codeChallenge"`
	CodeChallengeMethod string `json:"codeChallengeMethod"` // S256 only
}

// VerifyAuthorization is the answer: what the redirect to the client would carry.
type VerifyAuthorization struct {
	Code  string `json:"code"`
	State string `json:"state"`
}
