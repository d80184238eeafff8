package tokenserver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"github.com/go-jose/go-jose/v3"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/oauth"
)

// The admin API's checks of the device and JWT bearer grants: the same rules as the
// OAuthClient's CEL (api/v1alpha1/oauthclient_types.go), so that a client the CRD
// accepts is registered and one it refuses is refused here too, naming the same field.

const fieldJWTBearer = "jwtBearer"

// validateGrants: refresh_token only with a grant that issues refresh tokens, and
// jwt-bearer with its trust and the trust only with it.
func validateGrants(c *adminapi.Client, _ string) (string, string) {
	has := func(g string) bool { return slices.Contains(c.GrantTypes, g) }
	switch {
	case has(grantRefreshToken) && !has(grantAuthorizationCode) && !has(oauth.GrantDeviceCode):
		return fieldGrantTypes, "refresh_token needs a grant that issues refresh tokens (authorization_code or " +
			oauth.GrantDeviceCode + "); client_credentials and jwt-bearer issue none"
	case has(oauth.GrantJWTBearer) && len(c.JWTBearer) == 0:
		return fieldJWTBearer, "needs at least one trusted issuer when grantTypes includes " + oauth.GrantJWTBearer
	case has(oauth.GrantJWTBearer) && c.TokenEndpointAuthMethod == adminapi.AuthNone:
		return "tokenEndpointAuthMethod", oauth.GrantJWTBearer + " needs a confidential client: with none, the assertion " +
			"would be the only credential, and anyone holding one from the issuer would get tokens"
	case has(oauth.GrantJWTBearer) && !c.SkipConsent:
		return "skipConsent", oauth.GrantJWTBearer + " is for first-party clients only (skipConsent, in one of the " +
			"TokenServer's firstPartyNamespaces): its tokens name a subject no user consented for"
	case !has(oauth.GrantJWTBearer) && len(c.JWTBearer) > 0:
		return fieldJWTBearer, "is used only with grant type " + oauth.GrantJWTBearer + ": add it to grantTypes or remove jwtBearer"
	case len(c.JWTBearer) == 0:
		return "", ""
	}
	var jb adminapi.JWTBearer
	dec := json.NewDecoder(bytes.NewReader(c.JWTBearer))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&jb); err != nil {
		return fieldJWTBearer, "is not a valid trust document: " + err.Error()
	}
	if len(jb.TrustedIssuers) == 0 {
		return "jwtBearer.trustedIssuers", "needs at least one trusted issuer"
	}
	if len(jb.TrustedIssuers) > maxTrustedIssuers {
		return "jwtBearer.trustedIssuers", fmt.Sprintf("at most %d", maxTrustedIssuers)
	}
	seen := map[string]bool{}
	for i, t := range jb.TrustedIssuers {
		if field, msg := validateTrustedIssuer(t, c.Scopes); field != "" {
			return fmt.Sprintf("jwtBearer.trustedIssuers[%d]%s", i, field), msg
		}
		if seen[t.Issuer] {
			return fmt.Sprintf("jwtBearer.trustedIssuers[%d].issuer", i), fmt.Sprintf("%q is listed twice", t.Issuer)
		}
		seen[t.Issuer] = true
	}
	return "", ""
}

// The CRD's limits on a trust (api/v1alpha1 JWTBearer, TrustedJWTIssuer).
const (
	maxTrustedIssuers  = 16
	maxTrustedSubjects = 64
	maxTrustedScopes   = 64
	maxSubjectLength   = 255
)

// urlProblem is what the CRD's URL type refuses in u (api/v1alpha1/common_types.go),
// or "": the keys a trust is checked with must not come over plain http, where
// anyone on the path could replace them.
func urlProblem(u string) string {
	p, err := url.Parse(u)
	switch {
	case err != nil || p.Scheme == "" || p.Hostname() == "":
		return "must be an absolute URL with a scheme and a host, such as https://app.example.com/callback"
	case p.Scheme != "https" && (p.Scheme != "http" || !slices.Contains([]string{"localhost", "127.0.0.1", "::1"}, p.Hostname())):
		return "must use https; plain http is allowed only for localhost, 127.0.0.1 and [::1]"
	case strings.Contains(u, "#"):
		return "must not contain a fragment (#...)"
	}
	return ""
}

func validateTrustedIssuer(t adminapi.TrustedJWTIssuer, clientScopes []string) (string, string) {
	switch {
	case t.Issuer == "":
		return ".issuer", "is required"
	case (len(t.JWKS) > 0) == (t.JWKSURI != ""):
		return ".jwks", "set jwks or jwksURI (exactly one): the keys the issuer's assertions are checked with"
	case (len(t.Subjects) > 0) == t.AllowAnySubject:
		return ".subjects", "set subjects or allowAnySubject: true (exactly one): which subjects the issuer may assert"
	}
	if t.JWKSURI != "" {
		if msg := urlProblem(t.JWKSURI); msg != "" {
			return ".jwksURI", msg
		}
	}
	switch {
	case len(t.Subjects) > maxTrustedSubjects:
		return ".subjects", fmt.Sprintf("at most %d", maxTrustedSubjects)
	case len(t.Scopes) > maxTrustedScopes:
		return ".scopes", fmt.Sprintf("at most %d", maxTrustedScopes)
	}
	for i, sub := range t.Subjects {
		switch {
		case sub == "" || len(sub) > maxSubjectLength:
			return fmt.Sprintf(".subjects[%d]", i), fmt.Sprintf("must be 1 to %d characters", maxSubjectLength)
		case slices.Contains(t.Subjects[:i], sub):
			return fmt.Sprintf(".subjects[%d]", i), fmt.Sprintf("%q is listed twice", sub)
		}
	}
	if len(t.JWKS) > 0 {
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(t.JWKS, &set); err != nil || len(set.Keys) == 0 {
			return ".jwks", "must be a JSON Web Key Set with at least one key"
		}
		for i, k := range set.Keys {
			if !k.IsPublic() {
				return fmt.Sprintf(".jwks.keys[%d]", i), "must be a public key: an issuer never shares its private key"
			}
		}
	}
	for i, s := range t.Scopes {
		if !slices.Contains(clientScopes, s) {
			return fmt.Sprintf(".scopes[%d]", i), fmt.Sprintf("%q is not one of the client's scopes: a trusted issuer cannot give "+
				"the client more than the client may have", s)
		}
	}
	return "", ""
}
