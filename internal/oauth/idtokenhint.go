package oauth

import (
	"errors"
	"slices"
	"strings"

	"github.com/go-jose/go-jose/v3"
	josejwt "github.com/go-jose/go-jose/v3/jwt"

	"github.com/kubeoauth/kubeoauth/internal/signingkey"
)

// IDTokenHint is what an id_token_hint proves: that this server once issued an ID
// token for Subject to the clients in Audience.
type IDTokenHint struct {
	Subject  string
	Audience []string
}

// ErrBadIDTokenHint is any id_token_hint this server did not issue.
var ErrBadIDTokenHint = errors.New("the id_token_hint is not an ID token this server issued")

// VerifyIDTokenHint checks an ID token offered as a hint (RP-Initiated Logout 1.0,
// section 2): signed by the current or the previous signing key, issued by this
// issuer. An expired token is still a good hint (the spec says so: a user signs out
// long after the ID token's few minutes), so exp is not checked, nor nbf.
func (p *Provider) VerifyIDTokenHint(raw string) (IDTokenHint, error) {
	tok, err := josejwt.ParseSigned(raw)
	if err != nil || len(tok.Headers) != 1 {
		return IDTokenHint{}, ErrBadIDTokenHint
	}
	// A JWT access token (RFC 9068) is signed with the same key and has the same
	// claims; it is not an ID token.
	if typ, _ := tok.Headers[0].ExtraHeaders[jose.HeaderType].(string); strings.EqualFold(strings.TrimPrefix(typ, "application/"), "at+jwt") {
		return IDTokenHint{}, ErrBadIDTokenHint
	}
	var claims josejwt.Claims
	verified := false
	for _, k := range []*signingkey.Key{p.cfg.Keys.Current, p.cfg.Keys.Previous} {
		if k == nil || (tok.Headers[0].KeyID != "" && tok.Headers[0].KeyID != k.ID) ||
			tok.Headers[0].Algorithm != k.Algorithm {
			continue
		}
		if tok.Claims(jose.JSONWebKey{Key: k.Private.Public(), KeyID: k.ID, Algorithm: k.Algorithm}, &claims) == nil {
			verified = true
			break
		}
	}
	if !verified || claims.Issuer != p.cfg.Issuer || claims.Subject == "" || len(claims.Audience) == 0 {
		return IDTokenHint{}, ErrBadIDTokenHint
	}
	return IDTokenHint{Subject: claims.Subject, Audience: slices.Clone([]string(claims.Audience))}, nil
}
