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
	GrantID   string         `json:"grant_id,omitempty"`
	JWTClaims *jwt.JWTClaims `json:"jwt_claims,omitempty"`
	JWTHeader *jwt.Headers   `json:"jwt_header,omitempty"`
}

// NewSession returns an empty session for fosite to fill from storage.
func NewSession() *Session {
	return &Session{DefaultSession: *openid.NewDefaultSession(), JWTClaims: &jwt.JWTClaims{}, JWTHeader: &jwt.Headers{}}
}

// newSubjectSession starts a session for subject, with ID token claims for issuer.
func newSubjectSession(issuer, subject, grantID, kid string, now time.Time) *Session {
	s := NewSession()
	s.Subject, s.Username, s.GrantID = subject, subject, grantID
	s.Claims.Subject, s.Claims.Issuer = subject, issuer
	s.Claims.IssuedAt, s.Claims.RequestedAt, s.Claims.AuthTime = now, now, now
	s.Headers.Add("kid", kid)
	s.JWTClaims.Subject, s.JWTClaims.Issuer = subject, issuer
	s.JWTHeader.Add("kid", kid)
	s.JWTHeader.Add("typ", "at+jwt") // RFC 9068
	return s
}

// GetGrantID tells the store which consent grant the token belongs to.
func (s *Session) GetGrantID() string { return s.GrantID }

// GetJWTClaims implements oauth2.JWTSessionContainer (JWT access tokens).
func (s *Session) GetJWTClaims() jwt.JWTClaimsContainer { return s.JWTClaims }

// GetJWTHeader implements oauth2.JWTSessionContainer.
func (s *Session) GetJWTHeader() *jwt.Headers { return s.JWTHeader }

// Clone implements fosite.Session; fosite clones a session when it refreshes.
func (s *Session) Clone() fosite.Session {
	if s == nil {
		return nil
	}
	return deepcopy.Copy(s).(fosite.Session)
}
