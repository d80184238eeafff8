package oauth

import (
	"slices"

	"github.com/ory/fosite"
)

// Identity is what the server knows of a signed-in user beyond the subject: the
// attributes apps need to show and authorize the user (OpenID Connect Core 5.1).
type Identity struct {
	// Username is the preferred_username when it is not the subject: a user who
	// signed in through an upstream provider has a subject of its own making.
	Username      string   `json:"preferred_username,omitempty"`
	Name          string   `json:"name,omitempty"`
	Email         string   `json:"email,omitempty"`
	EmailVerified bool     `json:"email_verified,omitempty"`
	Groups        []string `json:"groups,omitempty"`
}

// StandardScopes are the OpenID Connect scopes that ask for claims about the user.
// Any client allowed openid may request them: they reveal nothing the user does not
// consent to on the consent page, so listing them on every client would be busywork.
var StandardScopes = []string{"profile", "email", "groups"}

// scopeStrategy is fosite's exact matching, plus the standard scopes for every client
// allowed openid.
func scopeStrategy(allowed []string, scope string) bool {
	if fosite.ExactScopeStrategy(allowed, scope) {
		return true
	}
	return slices.Contains(StandardScopes, scope) && fosite.ExactScopeStrategy(allowed, "openid")
}

// Claims are the claims about the user that scopes grant (OpenID Connect Core 5.4):
// profile gives name and preferred_username, email gives email and email_verified,
// groups gives groups. Empty attributes are left out rather than sent blank.
func Claims(subject string, id *Identity, scopes []string) map[string]any {
	c := map[string]any{}
	if id == nil {
		id = &Identity{}
	}
	if slices.Contains(scopes, "profile") {
		c["preferred_username"] = subject
		if id.Username != "" {
			c["preferred_username"] = id.Username
		}
		if id.Name != "" {
			c["name"] = id.Name
		}
	}
	if slices.Contains(scopes, "email") && id.Email != "" {
		c["email"] = id.Email
		c["email_verified"] = id.EmailVerified
	}
	if slices.Contains(scopes, "groups") && len(id.Groups) > 0 {
		c["groups"] = slices.Clone(id.Groups)
	}
	return c
}

// keepOnly returns the part of id that scopes let an app see: the session stored with
// a grant holds nothing the user did not consent to share.
func (id *Identity) keepOnly(scopes []string) *Identity {
	if id == nil {
		return nil
	}
	out := &Identity{}
	if slices.Contains(scopes, "profile") {
		out.Name, out.Username = id.Name, id.Username
	}
	if slices.Contains(scopes, "email") {
		out.Email, out.EmailVerified = id.Email, id.EmailVerified
	}
	if slices.Contains(scopes, "groups") {
		out.Groups = slices.Clone(id.Groups)
	}
	return out
}

// setIDTokenClaims puts the claims granted scopes allow into the session's ID token.
// It runs at every issue, a refresh included, so a refresh that narrows the scopes
// narrows the claims too.
func (s *Session) setIDTokenClaims(scopes []string) {
	if s.Claims == nil {
		return
	}
	for _, k := range []string{"name", "preferred_username", "email", "email_verified", "groups"} {
		delete(s.Claims.Extra, k)
	}
	c := Claims(s.Subject, s.Identity, scopes)
	if len(c) == 0 {
		return
	}
	if s.Claims.Extra == nil {
		s.Claims.Extra = map[string]any{}
	}
	for k, v := range c {
		s.Claims.Extra[k] = v
	}
}
