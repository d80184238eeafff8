package oauth

import (
	"time"

	"github.com/mohae/deepcopy"
	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/openid"
	"github.com/ory/fosite/token/jwt"
)

// Session is what the token server keeps with every token: the OpenID Connect session
// (subject, ID token claims), the consent grant the token was issued under, and the
// claims of JWT access tokens.
type Session struct {
	openid.DefaultSession
	GrantID string `json:"grant_id,omitempty"`
	// GrantExpiresAt is the grant's expiry when the token was issued: the store
	// clamps every expiry of the session to it (see postgres.GrantExpiryCarrier).
	GrantExpiresAt time.Time      `json:"grant_expires_at,omitzero"`
	JWTClaims      *jwt.JWTClaims `json:"jwt_claims,omitempty"`
	JWTHeader      *jwt.Headers   `json:"jwt_header,omitempty"`
	// Identity is the user's attributes from sign-in that the granted scopes allow:
	// kept with the grant so refreshed ID tokens and userinfo carry them too.
	Identity *Identity `json:"identity,omitempty"`
	// GrantStanding is the grant as the store found it when it read this session's
	// code or refresh token, joined to the token's row, so that the token endpoint
	// need not read the grant again (see Provider.limitToGrant). Never stored: it is
	// true of one request.
	GrantStanding *GrantStanding `json:"-"`
}

// GrantStanding is a grant found standing (it exists and has not expired).
type GrantStanding struct {
	// ExpiresAt is the grant's expiry as read; zero: never.
	ExpiresAt time.Time
}

// SetGrantStanding implements postgres.GrantStandingCarrier.
func (s *Session) SetGrantStanding(expiresAt time.Time) {
	s.GrantStanding = &GrantStanding{ExpiresAt: expiresAt}
}

// NewSession returns an empty session for fosite to fill from storage.
func NewSession() *Session {
	return &Session{DefaultSession: *openid.NewDefaultSession(), JWTClaims: &jwt.JWTClaims{}, JWTHeader: &jwt.Headers{}}
}

// sessionKind says which parts a new session needs. Every token stores its session,
// so a client_credentials token with opaque format skips the ID-token and JWT parts:
// a session a quarter the size is less to encode and write on the hottest path.
type sessionKind struct{ idToken, jwtAccess bool }

// newSubjectSession starts a session for subject, issued by issuer.
func newSubjectSession(issuer, subject, grantID, kid string, now time.Time, kind sessionKind) *Session {
	s := &Session{DefaultSession: openid.DefaultSession{Subject: subject, Username: subject}, GrantID: grantID}
	if kind.idToken {
		s.Claims = &jwt.IDTokenClaims{Subject: subject, Issuer: issuer, IssuedAt: now, RequestedAt: now, AuthTime: now}
		s.Headers = &jwt.Headers{}
		s.Headers.Add("kid", kid)
	}
	if kind.jwtAccess {
		s.JWTClaims = &jwt.JWTClaims{Subject: subject, Issuer: issuer}
		s.JWTHeader = &jwt.Headers{}
		s.JWTHeader.Add("kid", kid)
		s.JWTHeader.Add("typ", "at+jwt") // RFC 9068
	}
	return s
}

// GetGrantID tells the store which consent grant the token belongs to.
func (s *Session) GetGrantID() string { return s.GrantID }

// GetGrantExpiresAt tells the store when the consent grant expires (zero: never).
func (s *Session) GetGrantExpiresAt() time.Time { return s.GrantExpiresAt }

// limitTo makes every token of the session, the ID token included, expire by the
// grant's expiry at the latest, so that neither expires_in nor a JWT's exp promises
// more than the grant allows.
func (s *Session) limitTo(grantExpiresAt time.Time, idTokenLifespan time.Duration, now time.Time) {
	s.GrantExpiresAt = grantExpiresAt
	if grantExpiresAt.IsZero() {
		return
	}
	limit := grantExpiresAt.UTC()
	for _, tt := range []fosite.TokenType{fosite.AccessToken, fosite.RefreshToken, fosite.AuthorizeCode} {
		if exp := s.GetExpiresAt(tt); !exp.IsZero() && exp.After(limit) {
			s.SetExpiresAt(tt, limit)
		}
	}
	if s.Claims != nil {
		exp := s.Claims.ExpiresAt
		if exp.IsZero() {
			exp = now.Add(idTokenLifespan)
		}
		if exp.After(limit) {
			s.Claims.ExpiresAt = limit
		}
	}
}

// GetJWTClaims implements oauth2.JWTSessionContainer (JWT access tokens).
func (s *Session) GetJWTClaims() jwt.JWTClaimsContainer {
	if s.JWTClaims == nil {
		s.JWTClaims = &jwt.JWTClaims{}
	}
	return s.JWTClaims
}

// GetJWTHeader implements oauth2.JWTSessionContainer.
func (s *Session) GetJWTHeader() *jwt.Headers {
	if s.JWTHeader == nil {
		s.JWTHeader = &jwt.Headers{}
	}
	return s.JWTHeader
}

// Clone implements fosite.Session; fosite clones a session when it refreshes.
func (s *Session) Clone() fosite.Session {
	if s == nil {
		return nil
	}
	return deepcopy.Copy(s).(fosite.Session)
}
