package v1alpha1_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/clientspec"
	"github.com/kubeoauth/kubeoauth/internal/resources"
)

const ns = "validation"

// rejected says where the API server must refuse an object, and with what words; the
// zero value means the object must be accepted.
type rejected struct {
	field string
	msg   string
}

func ok() rejected                      { return rejected{} }
func reject(field, msg string) rejected { return rejected{field: field, msg: msg} }

// expect creates obj (or, with update, applies update to a created obj) and checks the
// API server's answer against want.
func expect(t *testing.T, err error, want rejected) {
	t.Helper()
	if want == (rejected{}) {
		if err != nil {
			t.Fatalf("want accepted, got: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("want rejected at %s with %q, but it was accepted", want.field, want.msg)
	}
	var status apierrors.APIStatus
	if !errors.As(err, &status) || status.Status().Details == nil {
		t.Fatalf("want a field error at %s, got: %v", want.field, err)
	}
	for _, c := range status.Status().Details.Causes {
		if c.Field == want.field && strings.Contains(c.Message, want.msg) {
			return
		}
	}
	t.Fatalf("want rejected at %s with %q, got: %v", want.field, want.msg, err)
}

func create(t *testing.T, obj client.Object, want rejected) {
	t.Helper()
	err := k8s.Create(context.Background(), obj)
	if err == nil {
		t.Cleanup(func() { _ = k8s.Delete(context.Background(), obj) })
	}
	expect(t, err, want)
}

func oauthClient(mutate ...func(*v1.OAuthClientSpec)) *v1.OAuthClient {
	c := &v1.OAuthClient{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "client-", Namespace: ns},
		Spec: v1.OAuthClientSpec{
			ServerRef:    v1.ServerReference{Name: "auth"},
			ClientName:   "Grafana",
			RedirectURIs: []v1.URL{"https://grafana.example.com/login/generic_oauth"},
		},
	}
	for _, m := range mutate {
		m(&c.Spec)
	}
	return c
}

func tokenServer(mutate ...func(*v1.TokenServerSpec)) *v1.TokenServer {
	s := &v1.TokenServer{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "auth-", Namespace: ns},
		Spec: v1.TokenServerSpec{
			Issuer:   "https://auth.example.com",
			Image:    "ghcr.io/kubeoauth/tokenserver:v0.1.0",
			Database: &v1.DatabaseSpec{Managed: &v1.ManagedDatabase{}},
		},
	}
	for _, m := range mutate {
		m(&s.Spec)
	}
	return s
}

func consentGrant(mutate ...func(*v1.ConsentGrantSpec)) *v1.ConsentGrant {
	g := &v1.ConsentGrant{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "grant-", Namespace: ns},
		Spec: v1.ConsentGrantSpec{
			ClientRef: v1.LocalObjectReference{Name: "grafana"},
			Subject:   "alice",
			Scopes:    []v1.Scope{"openid", "profile"},
		},
	}
	for _, m := range mutate {
		m(&g.Spec)
	}
	return g
}

var ecKey = v1.JSONWebKey{Kty: "EC", Crv: "P-256", Kid: "k1",
	X: "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", Y: "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}

func TestOAuthClientValidation(t *testing.T) {
	tests := map[string]struct {
		spec func(*v1.OAuthClientSpec)
		want rejected
	}{
		"a web app with an https redirect URI": {func(*v1.OAuthClientSpec) {}, ok()},
		"redirect URI on http://localhost": {func(s *v1.OAuthClientSpec) {
			s.RedirectURIs = []v1.URL{"http://localhost:8080/callback", "http://127.0.0.1/cb", "http://[::1]:9000/cb"}
		}, ok()},
		"redirect URI on plain http elsewhere": {func(s *v1.OAuthClientSpec) {
			s.RedirectURIs = []v1.URL{"http://grafana.example.com/cb"}
		}, reject("spec.redirectURIs[0]", "must use https; plain http is allowed only for localhost, 127.0.0.1 and [::1]")},
		"redirect URI on a look-alike of localhost": {func(s *v1.OAuthClientSpec) {
			s.RedirectURIs = []v1.URL{"http://localhost.evil.example/cb"}
		}, reject("spec.redirectURIs[0]", "plain http is allowed only for localhost")},
		"redirect URI with a custom scheme": {func(s *v1.OAuthClientSpec) {
			s.RedirectURIs = []v1.URL{"https://ok.example.com/cb", "com.example.app:/callback"}
		}, reject("spec.redirectURIs[1]", "must use https")},
		"relative redirect URI": {func(s *v1.OAuthClientSpec) {
			s.RedirectURIs = []v1.URL{"/callback"}
		}, reject("spec.redirectURIs[0]", "must be an absolute URL with a scheme and a host")},
		"redirect URI with a fragment": {func(s *v1.OAuthClientSpec) {
			s.RedirectURIs = []v1.URL{"https://app.example.com/cb#frag"}
		}, reject("spec.redirectURIs[0]", "must not contain a fragment")},
		"the same redirect URI twice": {func(s *v1.OAuthClientSpec) {
			s.RedirectURIs = []v1.URL{"https://a.example.com/cb", "https://a.example.com/cb"}
		}, reject("spec.redirectURIs[1]", "Duplicate value")},
		"33 redirect URIs": {func(s *v1.OAuthClientSpec) {
			s.RedirectURIs = nil
			for i := range 33 {
				s.RedirectURIs = append(s.RedirectURIs, v1.URL(fmt.Sprintf("https://a.example.com/cb%d", i)))
			}
		}, reject("spec.redirectURIs", "must have at most 32 items")},
		"a redirect URI of 3000 characters": {func(s *v1.OAuthClientSpec) {
			s.RedirectURIs = []v1.URL{v1.URL("https://a.example.com/" + strings.Repeat("a", 3000))}
		}, reject("spec.redirectURIs[0]", "may not be more than 2048 bytes")},
		"post-logout redirect URI on plain http": {func(s *v1.OAuthClientSpec) {
			s.PostLogoutRedirectURIs = []v1.URL{"http://app.example.com/bye"}
		}, reject("spec.postLogoutRedirectURIs[0]", "must use https")},
		"post-logout redirect URI with a fragment": {func(s *v1.OAuthClientSpec) {
			s.PostLogoutRedirectURIs = []v1.URL{"https://app.example.com/bye", "https://app.example.com/bye#x"}
		}, reject("spec.postLogoutRedirectURIs[1]", "must not contain a fragment")},
		"relative post-logout redirect URI": {func(s *v1.OAuthClientSpec) {
			s.PostLogoutRedirectURIs = []v1.URL{"/signed-out"}
		}, reject("spec.postLogoutRedirectURIs[0]", "must be an absolute URL with a scheme and a host")},
		"logo on plain http": {func(s *v1.OAuthClientSpec) { s.LogoURI = "http://cdn.example.com/logo.png" },
			reject("spec.logoURI", "must use https")},
		"client URI with a fragment": {func(s *v1.OAuthClientSpec) { s.ClientURI = "https://app.example.com/#home" },
			reject("spec.clientURI", "must not contain a fragment")},
		"policy URI that is not a URL": {func(s *v1.OAuthClientSpec) { s.PolicyURI = "privacy policy" },
			reject("spec.policyURI", "must be an absolute URL")},
		"terms URI on ftp": {func(s *v1.OAuthClientSpec) { s.TosURI = "ftp://app.example.com/tos" },
			reject("spec.tosURI", "must use https")},
		"all URIs on https": {func(s *v1.OAuthClientSpec) {
			s.LogoURI, s.ClientURI, s.PolicyURI, s.TosURI = "https://a.example.com/l.png", "https://a.example.com", "https://a.example.com/p", "https://a.example.com/t"
		}, ok()},
		"unknown grant type": {func(s *v1.OAuthClientSpec) {
			s.GrantTypes = []v1.GrantType{"authorization_code", "implicit"}
		}, reject("spec.grantTypes[1]", `Unsupported value: "implicit"`)},
		"unknown response type": {func(s *v1.OAuthClientSpec) {
			s.ResponseTypes = []v1.ResponseType{"token"}
		}, reject("spec.responseTypes[0]", `Unsupported value: "token"`)},
		"responseTypes id_token (implicit, not composed)": {func(s *v1.OAuthClientSpec) {
			s.ResponseTypes = []v1.ResponseType{"id_token"}
		}, reject("spec.responseTypes[0]", `Unsupported value: "id_token"`)},
		"responseTypes code id_token (hybrid, not composed)": {func(s *v1.OAuthClientSpec) {
			s.ResponseTypes = []v1.ResponseType{"code id_token"}
		}, reject("spec.responseTypes[0]", `Unsupported value: "code id_token"`)},
		"authorization_code without a redirect URI": {func(s *v1.OAuthClientSpec) {
			s.RedirectURIs = nil
		}, reject("spec.redirectURIs", "redirectURIs needs at least one URI when grantTypes includes authorization_code")},
		"client_credentials without a redirect URI": {func(s *v1.OAuthClientSpec) {
			s.RedirectURIs, s.GrantTypes = nil, []v1.GrantType{v1.GrantClientCredentials}
		}, ok()},
		"refresh_token with client_credentials only": {func(s *v1.OAuthClientSpec) {
			s.GrantTypes = []v1.GrantType{v1.GrantClientCredentials, v1.GrantRefreshToken}
		}, reject("spec.grantTypes", "refresh_token needs a grant that issues refresh tokens")},
		"refresh_token with authorization_code": {func(s *v1.OAuthClientSpec) {
			s.GrantTypes = []v1.GrantType{v1.GrantAuthorizationCode, v1.GrantRefreshToken}
		}, ok()},
		"device code, public, no redirect URI, with refresh_token": {func(s *v1.OAuthClientSpec) {
			s.RedirectURIs, s.TokenEndpointAuthMethod = nil, v1.AuthNone
			s.GrantTypes = []v1.GrantType{v1.GrantDeviceCode, v1.GrantRefreshToken}
		}, ok()},
		"jwt-bearer without jwtBearer": {func(s *v1.OAuthClientSpec) {
			s.GrantTypes = []v1.GrantType{v1.GrantJWTBearer}
		}, reject("spec.jwtBearer", "jwtBearer needs at least one trusted issuer when grantTypes includes urn:ietf:params:oauth:grant-type:jwt-bearer")},
		"jwtBearer without the grant": {func(s *v1.OAuthClientSpec) {
			s.JWTBearer = &v1.JWTBearer{TrustedIssuers: []v1.TrustedJWTIssuer{{Issuer: "https://ci.example.com", JWKSURI: "https://ci.example.com/keys", AllowAnySubject: true}}}
		}, reject("spec.jwtBearer", "jwtBearer is used only with grant type")},
		"jwt-bearer with a trusted issuer": {func(s *v1.OAuthClientSpec) {
			s.GrantTypes, s.Scopes, s.SkipConsent = []v1.GrantType{v1.GrantJWTBearer}, []v1.Scope{"zones.read"}, true
			s.JWTBearer = &v1.JWTBearer{TrustedIssuers: []v1.TrustedJWTIssuer{{Issuer: "https://ci.example.com",
				JWKS: &v1.JSONWebKeySet{Keys: []v1.JSONWebKey{ecKey}}, Subjects: []string{"deployer"}, Scopes: []v1.Scope{"zones.read"}}}}
		}, ok()},
		"jwt-bearer without skipConsent": {func(s *v1.OAuthClientSpec) {
			s.GrantTypes = []v1.GrantType{v1.GrantJWTBearer}
			s.JWTBearer = &v1.JWTBearer{TrustedIssuers: []v1.TrustedJWTIssuer{{Issuer: "https://ci.example.com", JWKSURI: "https://ci.example.com/keys", Subjects: []string{"deployer"}}}}
		}, reject("spec.skipConsent", "jwt-bearer needs skipConsent: true: the grant is for first-party clients only")},
		"jwt-bearer for a public client": {func(s *v1.OAuthClientSpec) {
			s.GrantTypes, s.SkipConsent, s.TokenEndpointAuthMethod = []v1.GrantType{v1.GrantJWTBearer}, true, v1.AuthNone
			s.JWTBearer = &v1.JWTBearer{TrustedIssuers: []v1.TrustedJWTIssuer{{Issuer: "https://ci.example.com", JWKSURI: "https://ci.example.com/keys", Subjects: []string{"deployer"}}}}
		}, reject("spec.tokenEndpointAuthMethod", "cannot include urn:ietf:params:oauth:grant-type:jwt-bearer when tokenEndpointAuthMethod is none")},
		"jwt-bearer refresh_token": {func(s *v1.OAuthClientSpec) {
			s.GrantTypes = []v1.GrantType{v1.GrantJWTBearer, v1.GrantRefreshToken}
			s.JWTBearer = &v1.JWTBearer{TrustedIssuers: []v1.TrustedJWTIssuer{{Issuer: "https://ci.example.com", JWKSURI: "https://ci.example.com/keys", AllowAnySubject: true}}}
		}, reject("spec.grantTypes", "refresh_token needs a grant that issues refresh tokens")},
		"trusted issuer with both jwks and jwksURI": {func(s *v1.OAuthClientSpec) {
			s.GrantTypes = []v1.GrantType{v1.GrantJWTBearer}
			s.JWTBearer = &v1.JWTBearer{TrustedIssuers: []v1.TrustedJWTIssuer{{Issuer: "https://ci.example.com", JWKSURI: "https://ci.example.com/keys",
				JWKS: &v1.JSONWebKeySet{Keys: []v1.JSONWebKey{ecKey}}, AllowAnySubject: true}}}
		}, reject("spec.jwtBearer.trustedIssuers[0]", "set jwks or jwksURI (exactly one)")},
		"trusted issuer with no subject rule": {func(s *v1.OAuthClientSpec) {
			s.GrantTypes = []v1.GrantType{v1.GrantJWTBearer}
			s.JWTBearer = &v1.JWTBearer{TrustedIssuers: []v1.TrustedJWTIssuer{{Issuer: "https://ci.example.com", JWKSURI: "https://ci.example.com/keys"}}}
		}, reject("spec.jwtBearer.trustedIssuers[0]", "set subjects or allowAnySubject: true (exactly one)")},
		"trusted issuer with a scope the client lacks": {func(s *v1.OAuthClientSpec) {
			s.GrantTypes, s.Scopes = []v1.GrantType{v1.GrantJWTBearer}, []v1.Scope{"zones.read"}
			s.JWTBearer = &v1.JWTBearer{TrustedIssuers: []v1.TrustedJWTIssuer{{Issuer: "https://ci.example.com", JWKSURI: "https://ci.example.com/keys",
				AllowAnySubject: true, Scopes: []v1.Scope{"zones.write"}}}}
		}, reject("spec.jwtBearer.trustedIssuers", "scopes must each be one of spec.scopes")},
		"response type code without authorization_code": {func(s *v1.OAuthClientSpec) {
			s.GrantTypes, s.ResponseTypes = []v1.GrantType{v1.GrantClientCredentials}, []v1.ResponseType{"code"}
		}, reject("spec.responseTypes", "responseTypes with code need grantTypes to include authorization_code")},
		"public client with client_credentials": {func(s *v1.OAuthClientSpec) {
			s.TokenEndpointAuthMethod = v1.AuthNone
			s.GrantTypes = []v1.GrantType{v1.GrantAuthorizationCode, v1.GrantClientCredentials}
		}, reject("spec.grantTypes", "cannot include client_credentials when tokenEndpointAuthMethod is none")},
		"public client with authorization_code": {func(s *v1.OAuthClientSpec) {
			s.TokenEndpointAuthMethod = v1.AuthNone
		}, ok()},
		"unknown auth method": {func(s *v1.OAuthClientSpec) { s.TokenEndpointAuthMethod = "tls_client_auth" },
			reject("spec.tokenEndpointAuthMethod", `Unsupported value: "tls_client_auth"`)},
		"private_key_jwt without keys": {func(s *v1.OAuthClientSpec) {
			s.TokenEndpointAuthMethod = v1.AuthPrivateKeyJWT
		}, reject("spec.tokenEndpointAuthMethod", "private_key_jwt needs the client's public keys in jwks or jwksURI")},
		"private_key_jwt with jwks": {func(s *v1.OAuthClientSpec) {
			s.TokenEndpointAuthMethod = v1.AuthPrivateKeyJWT
			s.JWKS = &v1.JSONWebKeySet{Keys: []v1.JSONWebKey{ecKey}}
		}, ok()},
		"private_key_jwt with jwksURI": {func(s *v1.OAuthClientSpec) {
			s.TokenEndpointAuthMethod = v1.AuthPrivateKeyJWT
			s.JWKSURI = "https://app.example.com/jwks.json"
		}, ok()},
		"both jwks and jwksURI": {func(s *v1.OAuthClientSpec) {
			s.TokenEndpointAuthMethod = v1.AuthPrivateKeyJWT
			s.JWKS = &v1.JSONWebKeySet{Keys: []v1.JSONWebKey{ecKey}}
			s.JWKSURI = "https://app.example.com/jwks.json"
		}, reject("spec.jwksURI", "set jwks or jwksURI, not both")},
		"EC key without y": {func(s *v1.OAuthClientSpec) {
			k := ecKey
			k.Y = ""
			s.JWKS = &v1.JSONWebKeySet{Keys: []v1.JSONWebKey{k}}
		}, reject("spec.jwks.keys[0]", "an EC key needs crv, x and y")},
		"RSA key without e": {func(s *v1.OAuthClientSpec) {
			s.JWKS = &v1.JSONWebKeySet{Keys: []v1.JSONWebKey{{Kty: "RSA", N: "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1Wl"}}}
		}, reject("spec.jwks.keys[0]", "an RSA key needs n and e")},
		"scopes from RFC 6749's alphabet": {func(s *v1.OAuthClientSpec) {
			s.Scopes = []v1.Scope{"openid", "zones.read", "https://api.example.com/read", "a:b!#$%&'()*+,-./;<=>?@[]^_`{|}~"}
		}, ok()},
		"scope with a space": {func(s *v1.OAuthClientSpec) { s.Scopes = []v1.Scope{"openid", "read write"} },
			reject("spec.scopes[1]", "must be a scope token (RFC 6749 section 3.3)")},
		"scope with a double quote": {func(s *v1.OAuthClientSpec) { s.Scopes = []v1.Scope{`say"hi"`} },
			reject("spec.scopes[0]", "must be a scope token")},
		"scope with a backslash": {func(s *v1.OAuthClientSpec) { s.Scopes = []v1.Scope{`a\b`} },
			reject("spec.scopes[0]", "must be a scope token")},
		"scope with a non-ASCII letter": {func(s *v1.OAuthClientSpec) { s.Scopes = []v1.Scope{"zoné"} },
			reject("spec.scopes[0]", "must be a scope token")},
		"empty scope": {func(s *v1.OAuthClientSpec) { s.Scopes = []v1.Scope{""} },
			reject("spec.scopes[0]", "should be at least 1 chars long")},
		"the same scope twice": {func(s *v1.OAuthClientSpec) { s.Scopes = []v1.Scope{"openid", "email", "openid"} },
			reject("spec.scopes[2]", `Duplicate value: "openid"`)},
		"the same grant type twice": {func(s *v1.OAuthClientSpec) {
			s.GrantTypes = []v1.GrantType{v1.GrantAuthorizationCode, v1.GrantAuthorizationCode}
		}, reject("spec.grantTypes[1]", "Duplicate value")},
		"empty audience": {func(s *v1.OAuthClientSpec) { s.Audience = []string{""} },
			reject("spec.audience[0]", "should be at least 1 chars long")},
		"no client name": {func(s *v1.OAuthClientSpec) { s.ClientName = "" },
			reject("spec.clientName", "should be at least 1 chars long")},
		"client name of 101 characters": {func(s *v1.OAuthClientSpec) { s.ClientName = strings.Repeat("x", 101) },
			reject("spec.clientName", "may not be more than 100 bytes")},
		"client ID with a space": {func(s *v1.OAuthClientSpec) { s.ClientID = "my client" },
			reject("spec.clientID", "may hold only letters, digits and . _ ~ -")},
		"client ID with a colon (HTTP Basic)": {func(s *v1.OAuthClientSpec) { s.ClientID = "tenant-a:web" },
			reject("spec.clientID", "may hold only letters, digits and . _ ~ -")},
		"client ID in a namespace's range": {func(s *v1.OAuthClientSpec) { s.ClientID = "tenant-a_web.v2~x" }, ok()},
		"access token lifespan in words": {func(s *v1.OAuthClientSpec) {
			s.TokenLifespans = &v1.TokenLifespans{AccessToken: "15 minutes"}
		}, reject("spec.tokenLifespans.accessToken", "must be a duration such as 30s, 15m or 720h")},
		"negative refresh token lifespan": {func(s *v1.OAuthClientSpec) {
			s.TokenLifespans = &v1.TokenLifespans{RefreshToken: "-5m"}
		}, reject("spec.tokenLifespans.refreshToken", "must be a duration such as")},
		"zero ID token lifespan": {func(s *v1.OAuthClientSpec) {
			s.TokenLifespans = &v1.TokenLifespans{IDToken: "0s"}
		}, reject("spec.tokenLifespans.idToken", "must be greater than zero")},
		"compound lifespans": {func(s *v1.OAuthClientSpec) {
			s.TokenLifespans = &v1.TokenLifespans{AccessToken: "1h30m", AuthorizationCode: "90.5s"}
		}, ok()},
		"lifespans at their bounds": {func(s *v1.OAuthClientSpec) {
			s.TokenLifespans = &v1.TokenLifespans{AccessToken: "24h", RefreshToken: "8760h", IDToken: "1440m", AuthorizationCode: "10m"}
		}, ok()},
		"an access token for centuries": {func(s *v1.OAuthClientSpec) {
			s.TokenLifespans = &v1.TokenLifespans{AccessToken: "2000000h"}
		}, reject("spec.tokenLifespans.accessToken", "must be at most 24h")},
		"a refresh token for two years": {func(s *v1.OAuthClientSpec) {
			s.TokenLifespans = &v1.TokenLifespans{RefreshToken: "17520h"}
		}, reject("spec.tokenLifespans.refreshToken", "must be at most 8760h")},
		"an ID token for a day and a second": {func(s *v1.OAuthClientSpec) {
			s.TokenLifespans = &v1.TokenLifespans{IDToken: "24h1s"}
		}, reject("spec.tokenLifespans.idToken", "must be at most 24h")},
		"an authorization code for an hour": {func(s *v1.OAuthClientSpec) {
			s.TokenLifespans = &v1.TokenLifespans{AuthorizationCode: "1h"}
		}, reject("spec.tokenLifespans.authorizationCode", "must be at most 10m")},
		"rotation overlap as long as the period": {func(s *v1.OAuthClientSpec) {
			s.Secret.Rotation = &v1.SecretRotation{Every: "24h", Overlap: "24h"}
		}, reject("spec.secret.rotation.overlap", "overlap must be shorter than every")},
		"rotation with a bad period": {func(s *v1.OAuthClientSpec) {
			s.Secret.Rotation = &v1.SecretRotation{Every: "90d"}
		}, reject("spec.secret.rotation.every", "must be a duration such as")},
		"rotation every 90 days": {func(s *v1.OAuthClientSpec) {
			s.Secret.Rotation = &v1.SecretRotation{Every: "2160h"}
		}, ok()},
		"unknown deletion policy": {func(s *v1.OAuthClientSpec) { s.DeletionPolicy = "Retain" },
			reject("spec.deletionPolicy", `Unsupported value: "Retain"`)},
		// PostgreSQL stores no NUL in text or jsonb: the token server's admin API would
		// answer every push of the client with a 500.
		"a NUL in clientName": {func(s *v1.OAuthClientSpec) { s.ClientName = "Graf\x00ana" },
			reject("spec.clientName", "must not contain a NUL character")},
		"a NUL in owner.team": {func(s *v1.OAuthClientSpec) { s.Owner = &v1.Owner{Team: "observability\x00"} },
			reject("spec.owner.team", "must not contain a NUL character")},
		"a NUL in owner.contact": {func(s *v1.OAuthClientSpec) { s.Owner = &v1.Owner{Team: "obs", Contact: "obs@example.com\x00"} },
			reject("spec.owner.contact", "must not contain a NUL character")},
		"a NUL in a trusted issuer's subject": {func(s *v1.OAuthClientSpec) {
			s.GrantTypes, s.SkipConsent = []v1.GrantType{v1.GrantJWTBearer}, true
			s.JWTBearer = &v1.JWTBearer{TrustedIssuers: []v1.TrustedJWTIssuer{{Issuer: "https://ci.example.com",
				JWKSURI: "https://ci.example.com/keys", Subjects: []string{"deployer\x00"}}}}
		}, reject("spec.jwtBearer.trustedIssuers[0].subjects[0]", "must not contain a NUL character")},
		"a NUL in a key's kid": {func(s *v1.OAuthClientSpec) {
			key := ecKey
			key.Kid = "k1\x00"
			s.TokenEndpointAuthMethod, s.JWKS = v1.AuthPrivateKeyJWT, &v1.JSONWebKeySet{Keys: []v1.JSONWebKey{key}}
		}, reject("spec.jwks.keys[0].kid", "must not contain a NUL character")},
		"a NUL in an audience": {func(s *v1.OAuthClientSpec) {
			s.Audience = []string{"https://api.example.com", "https://x.example.com\x00"}
		},
			reject("spec.audience[1]", "must not contain a NUL character")},
		"owner contact of 300 characters": {func(s *v1.OAuthClientSpec) {
			s.Owner = &v1.Owner{Team: "obs", Contact: strings.Repeat("a", 300)}
		}, reject("spec.owner.contact", "may not be more than 254 bytes")},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) { create(t, oauthClient(tc.spec), tc.want) })
	}
}

func TestOAuthClientDefaults(t *testing.T) {
	c := oauthClient()
	create(t, c, ok())
	s := c.Spec
	if len(s.GrantTypes) != 1 || s.GrantTypes[0] != v1.GrantAuthorizationCode {
		t.Errorf("grantTypes = %v, want [authorization_code]", s.GrantTypes)
	}
	if s.TokenEndpointAuthMethod != v1.AuthClientSecretBasic {
		t.Errorf("tokenEndpointAuthMethod = %q, want client_secret_basic", s.TokenEndpointAuthMethod)
	}
	if s.DeletionPolicy != v1.DeletionPolicyDelete {
		t.Errorf("deletionPolicy = %q, want Delete", s.DeletionPolicy)
	}
	if s.Secret.Create == nil || !*s.Secret.Create {
		t.Errorf("secret.create = %v, want true", s.Secret.Create)
	}
}

// An explicit empty list is not the same as none: defaults fill absent fields only, so
// `grantTypes: []` in YAML must be refused. (A Go client drops empty lists, hence raw.)
func TestOAuthClientRefusesEmptyGrantTypes(t *testing.T) {
	u := rawClient(map[string]any{"grantTypes": []any{}})
	expect(t, k8s.Create(context.Background(), u), reject("spec.grantTypes", "should have at least 1 items"))
}

// `allowedGroups: []` or `allowedEmailDomains: []` (a templated empty list, or
// "nobody yet") would otherwise be dropped on the way to the token server and read
// as no restriction: everyone the upstream provider signs in.
func TestTokenServerRefusesEmptyUpstreamAllowLists(t *testing.T) {
	for _, field := range []string{"allowedGroups", "allowedEmailDomains"} {
		ts := tokenServer(func(s *v1.TokenServerSpec) {
			s.Login = &v1.LoginSpec{UpstreamOIDC: &v1.UpstreamOIDC{Issuer: "https://accounts.example.com", ClientID: "x",
				ClientSecretRef: v1.SecretKeyReference{Name: "upstream"}}}
		})
		obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(ts)
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: obj}
		u.SetAPIVersion("oauth.kubeoauth.io/v1alpha1")
		u.SetKind("TokenServer")
		if err := unstructured.SetNestedSlice(u.Object, []any{}, "spec", "login", "upstreamOIDC", field); err != nil {
			t.Fatal(err)
		}
		expect(t, k8s.Create(context.Background(), u), reject("spec.login.upstreamOIDC."+field, "should have at least 1 items"))
	}
}

func rawClient(extra map[string]any) *unstructured.Unstructured {
	spec := map[string]any{
		"serverRef":    map[string]any{"name": "auth"},
		"clientName":   "App",
		"redirectURIs": []any{"https://app.example.com/cb"},
	}
	for k, v := range extra {
		spec[k] = v
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "oauth.kubeoauth.io/v1alpha1",
		"kind":       "OAuthClient",
		"metadata":   map[string]any{"generateName": "client-", "namespace": ns},
		"spec":       spec,
	}}
}

// A private key pasted into jwks must be refused, not silently dropped: kubectl applies
// with strict field validation, and so does this test.
func TestOAuthClientRefusesPrivateJWKMembers(t *testing.T) {
	u := rawClient(map[string]any{
		"tokenEndpointAuthMethod": "private_key_jwt",
		"jwks": map[string]any{"keys": []any{map[string]any{
			"kty": "EC", "crv": "P-256", "x": ecKey.X, "y": ecKey.Y, "d": "secret-part",
		}}},
	})
	err := k8s.Create(context.Background(), u, client.FieldValidation(metav1.FieldValidationStrict))
	if err == nil || !strings.Contains(err.Error(), `unknown field "spec.jwks.keys[0].d"`) {
		t.Fatalf("want the private member d refused as an unknown field, got: %v", err)
	}
}

func TestTokenServerValidation(t *testing.T) {
	external := &v1.ExternalTokenServer{AdminURL: "https://auth-admin.internal:4445",
		TokenSecretRef: v1.SecretKeyReference{Name: "auth-admin"}}
	tests := map[string]struct {
		spec func(*v1.TokenServerSpec)
		want rejected
	}{
		"managed database": {func(*v1.TokenServerSpec) {}, ok()},
		"external database": {func(s *v1.TokenServerSpec) {
			s.Database = &v1.DatabaseSpec{External: &v1.ExternalDatabase{SecretRef: v1.SecretKeyReference{Name: "pg", Key: "dsn"}}}
		}, ok()},
		"both databases": {func(s *v1.TokenServerSpec) {
			s.Database.External = &v1.ExternalDatabase{SecretRef: v1.SecretKeyReference{Name: "pg"}}
		}, reject("spec.database", "set exactly one of database.managed (a bundled PostgreSQL) or database.external")},
		"an empty database": {func(s *v1.TokenServerSpec) { s.Database = &v1.DatabaseSpec{} },
			reject("spec.database", "set exactly one of database.managed")},
		"no database": {func(s *v1.TokenServerSpec) { s.Database = nil },
			reject("spec.database", "database is required")},
		"no image": {func(s *v1.TokenServerSpec) { s.Image = "" },
			reject("spec.image", "image is required")},
		"image of spaces": {func(s *v1.TokenServerSpec) { s.Image = "  " },
			reject("spec.image", "must be a non-empty image reference without whitespace")},
		// A pod's image may not have leading or trailing whitespace, and one inside
		// cannot be pulled: the StatefulSet is accepted and its pods never come.
		"an image with a trailing newline": {func(s *v1.TokenServerSpec) { s.Image = "ghcr.io/kubeoauth/tokenserver:v0.1.0\n" },
			reject("spec.image", "must be a non-empty image reference without whitespace")},
		"an image with a leading tab": {func(s *v1.TokenServerSpec) { s.Image = "\tghcr.io/kubeoauth/tokenserver:v0.1.0" },
			reject("spec.image", "must be a non-empty image reference without whitespace")},
		"an image with a no-break space": {func(s *v1.TokenServerSpec) { s.Image = "ghcr.io/kubeoauth/tokenserver:v0.1.0\u00a0" },
			reject("spec.image", "must be a non-empty image reference without whitespace")},
		"a PostgreSQL image with a leading space": {func(s *v1.TokenServerSpec) { s.Database.Managed.Image = " postgres:15.18" },
			reject("spec.database.managed.image", "must be an image reference without whitespace")},
		"a PostgreSQL image with a trailing newline": {func(s *v1.TokenServerSpec) { s.Database.Managed.Image = "postgres:15.18\n" },
			reject("spec.database.managed.image", "must be an image reference without whitespace")},
		"a PostgreSQL image by digest": {func(s *v1.TokenServerSpec) {
			s.Database.Managed.Image = "docker.io/library/postgres@sha256:" + strings.Repeat("a", 64)
		}, ok()},
		"zero replicas": {func(s *v1.TokenServerSpec) { s.Replicas = ptr.To[int32](0) },
			reject("spec.replicas", "should be greater than or equal to 1")},
		"three replicas": {func(s *v1.TokenServerSpec) { s.Replicas = ptr.To[int32](3) }, ok()},
		"issuer on plain http": {func(s *v1.TokenServerSpec) { s.Issuer = "http://auth.example.com" },
			reject("spec.issuer", "must use https")},
		"issuer on http://localhost": {func(s *v1.TokenServerSpec) { s.Issuer = "http://localhost:8080" }, ok()},
		"issuer with a path":         {func(s *v1.TokenServerSpec) { s.Issuer = "https://example.com/auth" }, ok()},
		"issuer with a query": {func(s *v1.TokenServerSpec) { s.Issuer = "https://auth.example.com/?tenant=a" },
			reject("spec.issuer", "must not contain a query")},
		"issuer with a fragment": {func(s *v1.TokenServerSpec) { s.Issuer = "https://auth.example.com/#x" },
			reject("spec.issuer", "must not contain a fragment")},
		"no issuer": {func(s *v1.TokenServerSpec) { s.Issuer = "" },
			reject("spec.issuer", "should be at least 1 chars long")},
		"refresh grace period of 6 minutes": {func(s *v1.TokenServerSpec) { s.Tokens.RefreshGracePeriod = "6m" },
			reject("spec.tokens.refreshGracePeriod", "must be at most 5m")},
		"device poll interval of 10 seconds": {func(s *v1.TokenServerSpec) { s.Tokens.DevicePollInterval = "10s" }, ok()},
		"device poll interval of half a second": {func(s *v1.TokenServerSpec) { s.Tokens.DevicePollInterval = "500ms" },
			reject("spec.tokens.devicePollInterval", "must be whole seconds from 1s to 99s")},
		"device poll interval of zero": {func(s *v1.TokenServerSpec) { s.Tokens.DevicePollInterval = "0s" },
			reject("spec.tokens.devicePollInterval", "must be whole seconds from 1s to 99s")},
		"device code lifespan of 15 minutes": {func(s *v1.TokenServerSpec) { s.Tokens.DeviceCodeLifespan = "15m" }, ok()},
		"device code lifespan of zero": {func(s *v1.TokenServerSpec) { s.Tokens.DeviceCodeLifespan = "0s" },
			reject("spec.tokens.deviceCodeLifespan", "must be greater than zero")},
		"refresh grace period of 5 minutes": {func(s *v1.TokenServerSpec) { s.Tokens.RefreshGracePeriod = "5m" }, ok()},
		"no refresh grace period":           {func(s *v1.TokenServerSpec) { s.Tokens.RefreshGracePeriod = "0s" }, ok()},
		"refresh grace period in words": {func(s *v1.TokenServerSpec) { s.Tokens.RefreshGracePeriod = "half a minute" },
			reject("spec.tokens.refreshGracePeriod", "must be a duration such as 0s, 30s or 2m")},
		"zero access token lifespan": {func(s *v1.TokenServerSpec) { s.Tokens.AccessTokenLifespan = "0h" },
			reject("spec.tokens.accessTokenLifespan", "must be greater than zero")},
		"refresh token lifespan in days": {func(s *v1.TokenServerSpec) { s.Tokens.RefreshTokenLifespan = "30d" },
			reject("spec.tokens.refreshTokenLifespan", "must be a duration such as 30s, 15m or 720h")},
		"unknown access token format": {func(s *v1.TokenServerSpec) { s.Tokens.AccessTokenFormat = "paseto" },
			reject("spec.tokens.accessTokenFormat", `Unsupported value: "paseto"`)},
		"unknown signing algorithm": {func(s *v1.TokenServerSpec) { s.Tokens.SigningAlgorithm = "HS256" },
			reject("spec.tokens.signingAlgorithm", `Unsupported value: "HS256"`)},
		"error rate over 100%": {func(s *v1.TokenServerSpec) { s.Upgrade.MaxErrorRate = "150%" },
			reject("spec.upgrade.maxErrorRate", "must be a percentage from 0% to 100%")},
		"error rate without a percent sign": {func(s *v1.TokenServerSpec) { s.Upgrade.MaxErrorRate = "0.01" },
			reject("spec.upgrade.maxErrorRate", "must be a percentage")},
		"error rate of half a percent": {func(s *v1.TokenServerSpec) { s.Upgrade.MaxErrorRate = "0.5%" }, ok()},
		"copy target with a bundled database": {func(s *v1.TokenServerSpec) {
			s.Upgrade.DataMode = "Copy"
			s.Upgrade.Copy.TargetSecretRef = &v1.SecretKeyReference{Name: "auth-v2-db"}
		}, reject("spec.upgrade.copy.targetSecretRef", "is only for spec.database.external")},
		"copy target with an external database": {func(s *v1.TokenServerSpec) {
			s.Database = &v1.DatabaseSpec{External: &v1.ExternalDatabase{SecretRef: v1.SecretKeyReference{Name: "pg"}}}
			s.Upgrade.Copy.TargetSecretRef = &v1.SecretKeyReference{Name: "pg-v2", Key: "dsn"}
		}, ok()},
		"fence lease of a minute": {func(s *v1.TokenServerSpec) { s.Upgrade.Copy.FenceLease = "1m" },
			reject("spec.upgrade.copy.fenceLease", "must be from 1s to 30s")},
		"fence lease of 2s": {func(s *v1.TokenServerSpec) { s.Upgrade.Copy.FenceLease = "2s" }, ok()},
		"unknown data mode": {func(s *v1.TokenServerSpec) { s.Upgrade.DataMode = "Migrate" },
			reject("spec.upgrade.dataMode", `Unsupported value: "Migrate"`)},
		"analysis every 15s, 50 requests, 2 failures": {func(s *v1.TokenServerSpec) {
			s.Upgrade.Analysis = v1.UpgradeAnalysis{Interval: "15s", MinRequestsPerStep: ptr.To[int32](50), FailureThreshold: 2}
		}, ok()},
		"analysis without minimum traffic": {func(s *v1.TokenServerSpec) {
			s.Upgrade.Analysis.MinRequestsPerStep = ptr.To[int32](0)
		}, ok()},
		"analysis interval in words": {func(s *v1.TokenServerSpec) { s.Upgrade.Analysis.Interval = "a minute" },
			reject("spec.upgrade.analysis.interval", "must be a duration such as 30s, 15m or 720h")},
		"negative minimum requests": {func(s *v1.TokenServerSpec) { s.Upgrade.Analysis.MinRequestsPerStep = ptr.To[int32](-1) },
			reject("spec.upgrade.analysis.minRequestsPerStep", "should be greater than or equal to 0")},
		"failure threshold of 101": {func(s *v1.TokenServerSpec) { s.Upgrade.Analysis.FailureThreshold = 101 },
			reject("spec.upgrade.analysis.failureThreshold", "should be less than or equal to 100")},
		"pods' progress deadline under a second": {func(s *v1.TokenServerSpec) { s.ProgressDeadline = "500ms" },
			reject("spec.progressDeadline", "must be at least 1s")},
		"pods' progress deadline of zero": {func(s *v1.TokenServerSpec) { s.ProgressDeadline = "0s" },
			reject("spec.progressDeadline", "must be greater than zero")},
		"pods' progress deadline in seconds, as a Deployment's": {func(s *v1.TokenServerSpec) { s.ProgressDeadline = "600" },
			reject("spec.progressDeadline", "must be a duration such as 30s, 15m or 720h")},
		"pods' progress deadline of 15 minutes": {func(s *v1.TokenServerSpec) { s.ProgressDeadline = "15m" }, ok()},
		"pods' progress deadline of 1s":         {func(s *v1.TokenServerSpec) { s.ProgressDeadline = "1s" }, ok()},
		"zero progress deadline": {func(s *v1.TokenServerSpec) { s.Upgrade.ProgressDeadline = "0s" },
			reject("spec.upgrade.progressDeadline", "must be greater than zero")},
		"scale-down delay in days": {func(s *v1.TokenServerSpec) { s.Upgrade.ScaleDownDelay = "1d" },
			reject("spec.upgrade.scaleDownDelay", "must be a duration such as")},
		"rollback window of a day": {func(s *v1.TokenServerSpec) { s.Upgrade.RollbackWindow = "24h" }, ok()},
		"negative rollback window": {func(s *v1.TokenServerSpec) { s.Upgrade.RollbackWindow = "-1h" },
			reject("spec.upgrade.rollbackWindow", "must be a duration such as")},
		"a window at night in Paris": {func(s *v1.TokenServerSpec) {
			s.Upgrade.Window = &v1.UpgradeWindow{Start: "02:00", Duration: "2h", TimeZone: "Europe/Paris"}
		}, ok()},
		"a window in UTC": {func(s *v1.TokenServerSpec) {
			s.Upgrade.Window = &v1.UpgradeWindow{Start: "23:30", Duration: "90m"}
		}, ok()},
		"a window starting at 24:00": {func(s *v1.TokenServerSpec) {
			s.Upgrade.Window = &v1.UpgradeWindow{Start: "24:00", Duration: "1h"}
		}, reject("spec.upgrade.window.start", "must be a time of day as HH:MM on a 24-hour clock")},
		"a window starting at 2am": {func(s *v1.TokenServerSpec) {
			s.Upgrade.Window = &v1.UpgradeWindow{Start: "2am", Duration: "1h"}
		}, reject("spec.upgrade.window.start", "must be a time of day as HH:MM")},
		"a window of 25 hours": {func(s *v1.TokenServerSpec) {
			s.Upgrade.Window = &v1.UpgradeWindow{Start: "02:00", Duration: "25h"}
		}, reject("spec.upgrade.window.duration", "must be at most 24h")},
		"a window without a duration": {func(s *v1.TokenServerSpec) {
			s.Upgrade.Window = &v1.UpgradeWindow{Start: "02:00"}
		}, reject("spec.upgrade.window.duration", "must be a duration such as")},
		"a window in a time zone with spaces": {func(s *v1.TokenServerSpec) {
			s.Upgrade.Window = &v1.UpgradeWindow{Start: "02:00", Duration: "1h", TimeZone: "Central European Time"}
		}, reject("spec.upgrade.window.timeZone", "must be an IANA time zone name")},
		"the same scope described twice": {func(s *v1.TokenServerSpec) {
			s.ScopeDescriptions = []v1.ScopeDescription{{Name: "openid", Description: "a"}, {Name: "openid", Description: "b"}}
		}, reject("spec.scopeDescriptions[1]", "Duplicate value")},
		"scope description for a bad scope": {func(s *v1.TokenServerSpec) {
			s.ScopeDescriptions = []v1.ScopeDescription{{Name: "read all", Description: "a"}}
		}, reject("spec.scopeDescriptions[0].name", "must be a scope token")},
		"users secret and upstream OIDC both": {func(s *v1.TokenServerSpec) {
			s.Login = &v1.LoginSpec{
				UsersSecretRef: &v1.SecretKeyReference{Name: "users"},
				UpstreamOIDC: &v1.UpstreamOIDC{Issuer: "https://accounts.example.com", ClientID: "x",
					ClientSecretRef: v1.SecretKeyReference{Name: "upstream"}},
			}
		}, ok()},
		"login with neither users nor upstream": {func(s *v1.TokenServerSpec) { s.Login = &v1.LoginSpec{} },
			reject("spec.login", "set login.usersSecretRef, login.upstreamOIDC or both")},
		"client address from the ingress's header": {func(s *v1.TokenServerSpec) {
			s.Login = &v1.LoginSpec{UsersSecretRef: &v1.SecretKeyReference{Name: "users"}, ClientIPHeader: "X-Forwarded-For",
				TrustedProxies: []string{"10.244.0.0/16", "fd00::/8"}}
		}, ok()},
		"client address header without trusted proxies": {func(s *v1.TokenServerSpec) {
			s.Login = &v1.LoginSpec{UsersSecretRef: &v1.SecretKeyReference{Name: "users"}, ClientIPHeader: "X-Forwarded-For"}
		}, reject("spec.login.trustedProxies", "login.clientIPHeader needs login.trustedProxies")},
		"a trusted proxy that is no CIDR": {func(s *v1.TokenServerSpec) {
			s.Login = &v1.LoginSpec{UsersSecretRef: &v1.SecretKeyReference{Name: "users"}, ClientIPHeader: "X-Real-IP",
				TrustedProxies: []string{"10.0.0.0/8", "ingress-nginx"}}
		}, reject("spec.login.trustedProxies[1]", "must be a CIDR")},
		"a client address header that is no header name": {func(s *v1.TokenServerSpec) {
			s.Login = &v1.LoginSpec{UsersSecretRef: &v1.SecretKeyReference{Name: "users"}, ClientIPHeader: "X-Forwarded-For: 1.2.3.4",
				TrustedProxies: []string{"10.0.0.0/8"}}
		}, reject("spec.login.clientIPHeader", "should match")},
		"upstream OIDC with every setting": {func(s *v1.TokenServerSpec) {
			s.Login = &v1.LoginSpec{UpstreamOIDC: &v1.UpstreamOIDC{Issuer: "https://sso.example.com/realms/staff", ClientID: "x",
				ClientSecretRef: v1.SecretKeyReference{Name: "upstream", Key: "secret"}, Scopes: []v1.Scope{"openid", "groups"},
				Claims:        &v1.UpstreamClaims{Username: "email", Groups: "roles"},
				AllowedGroups: []string{"platform"}, DisplayName: "Corp SSO"}}
		}, ok()},
		"upstream OIDC scopes without openid": {func(s *v1.TokenServerSpec) {
			s.Login = &v1.LoginSpec{UpstreamOIDC: &v1.UpstreamOIDC{Issuer: "https://accounts.example.com", ClientID: "x",
				ClientSecretRef: v1.SecretKeyReference{Name: "upstream"}, Scopes: []v1.Scope{"profile", "email"}}}
		}, reject("spec.login.upstreamOIDC.scopes", "scopes must include openid")},
		"upstream OIDC allowed group empty": {func(s *v1.TokenServerSpec) {
			s.Login = &v1.LoginSpec{UpstreamOIDC: &v1.UpstreamOIDC{Issuer: "https://accounts.example.com", ClientID: "x",
				ClientSecretRef: v1.SecretKeyReference{Name: "upstream"}, AllowedGroups: []string{""}}}
		}, reject("spec.login.upstreamOIDC.allowedGroups[0]", "at least 1")},
		"upstream OIDC allowed group with spaces around": {func(s *v1.TokenServerSpec) {
			s.Login = &v1.LoginSpec{UpstreamOIDC: &v1.UpstreamOIDC{Issuer: "https://accounts.example.com", ClientID: "x",
				ClientSecretRef: v1.SecretKeyReference{Name: "upstream"}, AllowedGroups: []string{"platform "}}}
		}, reject("spec.login.upstreamOIDC.allowedGroups[0]", "should match")},
		"upstream OIDC fetch allow": {func(s *v1.TokenServerSpec) {
			s.Login = &v1.LoginSpec{UpstreamOIDC: &v1.UpstreamOIDC{Issuer: "https://accounts.example.com", ClientID: "x",
				ClientSecretRef: v1.SecretKeyReference{Name: "upstream"}, FetchAllow: []string{"10.96.0.0/12", "fd00::/8"}}}
		}, ok()},
		"upstream OIDC fetch allow not a CIDR": {func(s *v1.TokenServerSpec) {
			s.Login = &v1.LoginSpec{UpstreamOIDC: &v1.UpstreamOIDC{Issuer: "https://accounts.example.com", ClientID: "x",
				ClientSecretRef: v1.SecretKeyReference{Name: "upstream"}, FetchAllow: []string{"10.96.0.1"}}}
		}, reject("spec.login.upstreamOIDC.fetchAllow[0]", "must be a CIDR")},
		"upstream OIDC allowed email domains": {func(s *v1.TokenServerSpec) {
			s.Login = &v1.LoginSpec{UpstreamOIDC: &v1.UpstreamOIDC{Issuer: "https://accounts.example.com", ClientID: "x",
				ClientSecretRef: v1.SecretKeyReference{Name: "upstream"}, AllowedEmailDomains: []string{"corp.example", "eu.corp.example"}}}
		}, ok()},
		"upstream OIDC allowed email domain not a domain": {func(s *v1.TokenServerSpec) {
			s.Login = &v1.LoginSpec{UpstreamOIDC: &v1.UpstreamOIDC{Issuer: "https://accounts.example.com", ClientID: "x",
				ClientSecretRef: v1.SecretKeyReference{Name: "upstream"}, AllowedEmailDomains: []string{"@corp.example"}}}
		}, reject("spec.login.upstreamOIDC.allowedEmailDomains[0]", "should match")},

		"upstream OIDC issuer on plain http": {func(s *v1.TokenServerSpec) {
			s.Login = &v1.LoginSpec{UpstreamOIDC: &v1.UpstreamOIDC{Issuer: "http://accounts.example.com", ClientID: "x",
				ClientSecretRef: v1.SecretKeyReference{Name: "upstream"}}}
		}, reject("spec.login.upstreamOIDC.issuer", "must use https")},
		"a namespace selector": {func(s *v1.TokenServerSpec) {
			s.ClientNamespaces = &v1.NamespacePolicy{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}}}
		}, ok()},
		"external server": {func(s *v1.TokenServerSpec) {
			s.Image, s.Database, s.External = "", nil, external
		}, ok()},
		"external server with an image": {func(s *v1.TokenServerSpec) { s.Database, s.External = nil, external },
			reject("spec.external", "external cannot be combined with image or database")},
		"external server with a bad admin URL": {func(s *v1.TokenServerSpec) {
			s.Image, s.Database = "", nil
			s.External = &v1.ExternalTokenServer{AdminURL: "auth-admin:4445", TokenSecretRef: v1.SecretKeyReference{Name: "a"}}
		}, reject("spec.external.adminURL", "must be an absolute http or https URL")},
		"external server over http": {func(s *v1.TokenServerSpec) {
			s.Image, s.Database = "", nil
			s.External = &v1.ExternalTokenServer{AdminURL: "http://auth-admin:4445", TokenSecretRef: v1.SecretKeyReference{Name: "a"}}
		}, reject("spec.external.adminURL", "set spec.external.insecure: true")},
		"external server over http, insecure said": {func(s *v1.TokenServerSpec) {
			s.Image, s.Database = "", nil
			s.External = &v1.ExternalTokenServer{AdminURL: "http://auth-admin:4445", TokenSecretRef: v1.SecretKeyReference{Name: "a"},
				Insecure: true}
		}, ok()},
		"database storage size of 10Gi": {func(s *v1.TokenServerSpec) {
			s.Database.Managed.StorageSize = resource.MustParse("10Gi")
		}, ok()},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) { create(t, tokenServer(tc.spec), tc.want) })
	}
}

func TestTokenServerDefaults(t *testing.T) {
	s := tokenServer()
	create(t, s, ok())
	got := s.Spec
	checks := map[string][2]string{
		"replicas":                  {fmt.Sprint(*got.Replicas), "1"},
		"accessTokenFormat":         {got.Tokens.AccessTokenFormat, "opaque"},
		"accessTokenLifespan":       {string(got.Tokens.AccessTokenLifespan), "1h"},
		"refreshTokenLifespan":      {string(got.Tokens.RefreshTokenLifespan), "720h"},
		"authorizationCodeLifespan": {string(got.Tokens.AuthorizationCodeLifespan), "10m"},
		"signingAlgorithm":          {got.Tokens.SigningAlgorithm, "ES256"},
		"requirePKCE":               {fmt.Sprint(got.Tokens.RequirePKCE != nil && *got.Tokens.RequirePKCE), "true"},
		"upgrade.strategy":          {got.Upgrade.Strategy, "BlueGreen"},
		"upgrade.dataMode":          {got.Upgrade.DataMode, "Auto"},
		"upgrade.copy.fenceLease":   {string(got.Upgrade.Copy.FenceLease), "5s"},
		"upgrade.maxErrorRate":      {got.Upgrade.MaxErrorRate, "1%"},
		"upgrade.analysis.interval": {string(got.Upgrade.Analysis.Interval), "30s"},
		"upgrade.analysis.minReqs":  {fmt.Sprint(ptr.Deref(got.Upgrade.Analysis.MinRequestsPerStep, -1)), "20"},
		"upgrade.analysis.failures": {fmt.Sprint(got.Upgrade.Analysis.FailureThreshold), "3"},
		"progressDeadline":          {string(got.ProgressDeadline), "10m"},
		"upgrade.progressDeadline":  {string(got.Upgrade.ProgressDeadline), "10m"},
		"upgrade.scaleDownDelay":    {string(got.Upgrade.ScaleDownDelay), "30s"},
		"upgrade.rollbackWindow":    {string(got.Upgrade.RollbackWindow), "1h"},
		"upgrade.window":            {fmt.Sprint(got.Upgrade.Window), "<nil>"},
		"database.managed.storage":  {got.Database.Managed.StorageSize.String(), "1Gi"},
	}
	for field, c := range checks {
		if c[0] != c[1] {
			t.Errorf("%s defaulted to %q, want %q", field, c[0], c[1])
		}
	}
}

func TestConsentGrantValidation(t *testing.T) {
	tests := map[string]struct {
		spec func(*v1.ConsentGrantSpec)
		want rejected
	}{
		"a grant": {func(*v1.ConsentGrantSpec) {}, ok()},
		"a grant that expires": {func(s *v1.ConsentGrantSpec) {
			s.ExpiresAt = &metav1.Time{Time: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}
		}, ok()},
		"no subject": {func(s *v1.ConsentGrantSpec) { s.Subject = "" },
			reject("spec.subject", "should be at least 1 chars long")},
		"no client": {func(s *v1.ConsentGrantSpec) { s.ClientRef.Name = "" },
			reject("spec.clientRef.name", "should be at least 1 chars long")},
		"no scopes": {func(s *v1.ConsentGrantSpec) { s.Scopes = []v1.Scope{} },
			reject("spec.scopes", "should have at least 1 items")},
		"a bad scope": {func(s *v1.ConsentGrantSpec) { s.Scopes = []v1.Scope{"openid", "read all"} },
			reject("spec.scopes[1]", "must be a scope token")},
		"the same scope twice": {func(s *v1.ConsentGrantSpec) { s.Scopes = []v1.Scope{"openid", "openid"} },
			reject("spec.scopes[1]", "Duplicate value")},
		"a NUL in the subject": {func(s *v1.ConsentGrantSpec) { s.Subject = "alice\x00" },
			reject("spec.subject", "must not contain a NUL character")},
		"a subject ..": {func(s *v1.ConsentGrantSpec) { s.Subject = ".." }, reject("spec.subject", "must not be . or ..")},
		"a subject .":  {func(s *v1.ConsentGrantSpec) { s.Subject = "." }, reject("spec.subject", "must not be . or ..")},
		"65 scopes": {func(s *v1.ConsentGrantSpec) {
			s.Scopes = nil
			for i := range 65 {
				s.Scopes = append(s.Scopes, v1.Scope(fmt.Sprintf("s%d", i)))
			}
		}, reject("spec.scopes", "must have at most 64 items")},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) { create(t, consentGrant(tc.spec), tc.want) })
	}
}

// Fields that cannot change after creation: the API server refuses the update.
func TestImmutableFields(t *testing.T) {
	tests := map[string]struct {
		obj    client.Object
		update func(client.Object)
		want   rejected
	}{
		"OAuthClient serverRef": {oauthClient(), func(o client.Object) {
			o.(*v1.OAuthClient).Spec.ServerRef.Name = "other"
		}, reject("spec.serverRef", "serverRef cannot change after creation")},
		"OAuthClient clientID changed": {oauthClient(func(s *v1.OAuthClientSpec) { s.ClientID = "grafana" }),
			func(o client.Object) { o.(*v1.OAuthClient).Spec.ClientID = "grafana2" },
			reject("spec.clientID", "clientID cannot be set, changed or removed after creation")},
		"OAuthClient clientID set later": {oauthClient(), func(o client.Object) {
			o.(*v1.OAuthClient).Spec.ClientID = "grafana"
		}, reject("spec.clientID", "clientID cannot be set, changed or removed after creation")},
		"OAuthClient clientID removed": {oauthClient(func(s *v1.OAuthClientSpec) { s.ClientID = "grafana" }),
			func(o client.Object) { o.(*v1.OAuthClient).Spec.ClientID = "" },
			reject("spec.clientID", "clientID cannot be set, changed or removed after creation")},
		"OAuthClient display name": {oauthClient(), func(o client.Object) {
			o.(*v1.OAuthClient).Spec.ClientName = "Grafana (prod)"
		}, ok()},
		"ConsentGrant clientRef": {consentGrant(), func(o client.Object) {
			o.(*v1.ConsentGrant).Spec.ClientRef.Name = "other"
		}, reject("spec.clientRef", "clientRef cannot change after creation")},
		"ConsentGrant subject": {consentGrant(), func(o client.Object) {
			o.(*v1.ConsentGrant).Spec.Subject = "mallory"
		}, reject("spec.subject", "subject cannot change after creation")},
		"ConsentGrant scopes": {consentGrant(), func(o client.Object) {
			o.(*v1.ConsentGrant).Spec.Scopes = []v1.Scope{"openid"}
		}, ok()},
		"TokenServer image": {tokenServer(), func(o client.Object) {
			o.(*v1.TokenServer).Spec.Image = "ghcr.io/kubeoauth/tokenserver:v0.2.0"
		}, ok()},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			create(t, tc.obj, ok())
			tc.update(tc.obj)
			expect(t, k8s.Update(context.Background(), tc.obj), tc.want)
		})
	}
}

// The operator's record of an upgrade goes through the status subresource: every
// phase the state machine writes is accepted, anything else refused.
func TestUpgradeStatus(t *testing.T) {
	ts := tokenServer()
	create(t, ts, ok())
	now := metav1.NewTime(time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC))
	phases := []v1.UpgradePhase{v1.UpgradePlanning, v1.UpgradeMigrating, v1.UpgradeDeploying, v1.UpgradeVerifying,
		v1.UpgradePaused, v1.UpgradePromoting, v1.UpgradeScalingDown, v1.UpgradeRollbackWindow, v1.UpgradeContracting,
		v1.UpgradeCompleted, v1.UpgradeRollingBack, v1.UpgradeRolledBack, v1.UpgradeRefused, v1.UpgradeFailed}
	for _, p := range phases {
		ts.Status.Upgrade = &v1.UpgradeStatus{ID: "0badc0de", Phase: p, PhaseSince: &now, FromImage: "a:1", ToImage: "a:2",
			FromColor: "blue", ToColor: "green", Step: 1, Steps: 3, Progress: "0/3",
			Plan:      &v1.UpgradePlan{Mode: "Shared", SchemaFrom: 3, SchemaTo: 4, Reason: "expand only"},
			Analysis:  &v1.UpgradeAnalysisStatus{Requests: 50, Errors: 1, Rate: "2.00%", FailedChecks: 1, LastCheck: &now},
			StartedAt: &now}
		ts.Status.FailedImage = "a:2"
		expect(t, k8s.Status().Update(context.Background(), ts), ok())
	}
	ts.Status.Upgrade.Phase = "Sleeping"
	expect(t, k8s.Status().Update(context.Background(), ts), reject("status.upgrade.phase", `Unsupported value: "Sleeping"`))
	ts.Status.Upgrade.Phase, ts.Status.Upgrade.Plan.Mode = v1.UpgradePlanning, "Magic"
	expect(t, k8s.Status().Update(context.Background(), ts), reject("status.upgrade.plan.mode", `Unsupported value: "Magic"`))
}

// A TokenServer named like another one's objects (auth-green beside auth, whose
// StatefulSet and headless Service are auth-green) would fight over them.
func TestTokenServerNamesThatCollide(t *testing.T) {
	for name, want := range map[string]rejected{
		"auth-green":       reject("metadata", "metadata.name must not end in -blue, -green"),
		"auth-blue":        reject("metadata", "metadata.name must not end in -blue, -green"),
		"auth-admin":       reject("metadata", "metadata.name must not end in"),
		"auth-db":          reject("metadata", "metadata.name must not end in"),
		"auth-keys":        reject("metadata", "metadata.name must not end in"),
		"auth-config":      reject("metadata", "metadata.name must not end in"),
		"auth-pages":       reject("metadata", "metadata.name must not end in"),
		"auth-tokenserver": reject("metadata", "metadata.name must not end in"),
		"auth":             ok(),
		"greenhouse":       ok(),
		"auth-blueprint":   ok(),
	} {
		t.Run(name, func(t *testing.T) {
			ts := tokenServer()
			ts.GenerateName, ts.Name = "", name
			create(t, ts, want)
		})
	}
}

// The operator names a TokenServer's Service metadata.name, and its first install's
// migration Job <metadata.name>-migrate-<8 hex digits>, whose pods carry it as their
// job-name label (at most 63 characters; <name>-green-<10> is the StatefulSet pods'
// controller-revision-hash, the same bound): a name a Service cannot take, or one
// longer than 46 characters, is refused, naming metadata.name, not later every
// object the operator writes for it. At the bound, every object is accepted.
func TestTokenServerNamesTheOperatorCannotUse(t *testing.T) {
	const dns1035 = "metadata.name must be a DNS-1035 label"
	const tooLong = "metadata.name must be at most 46 characters"
	for name, tt := range map[string]struct {
		name string
		want rejected
	}{
		"a dot":                 {"auth.v2", reject("metadata", dns1035)},
		"a leading digit":       {"2fa", reject("metadata", dns1035)},
		"47 characters":         {strings.Repeat("a", 47), reject("metadata", tooLong)},
		"58 characters":         {strings.Repeat("b", 58), reject("metadata", tooLong)},
		"a dot, and long":       {"identity." + strings.Repeat("c", 40), reject("metadata", dns1035)},
		"one letter":            {"a", ok()},
		"46 characters":         {"auth-" + strings.Repeat("d", 41), ok()},
		"digits and dashes too": {"auth-2-eu", ok()},
	} {
		t.Run(name, func(t *testing.T) {
			ts := tokenServer()
			ts.GenerateName, ts.Name = "", tt.name
			create(t, ts, tt.want)
			if tt.want == ok() {
				if refused := operatorObjectsRefused(t, ts); len(refused) > 0 {
					t.Fatalf("TokenServer %q was accepted, and the operator's objects are then refused: %s", tt.name,
						strings.Join(refused, "; "))
				}
			}
		})
	}
}

// operatorObjectsRefused dry-runs the objects the operator builds from ts (the
// PostgreSQL and token server StatefulSets, their Services, the PDB, the
// NetworkPolicies, the migration Job) and returns the API server's refusals.
func operatorObjectsRefused(t *testing.T, ts *v1.TokenServer) []string {
	t.Helper()
	var refused []string
	objs := []client.Object{
		resources.TokenServerStatefulSet(ts, resources.Inputs{Color: "green", Image: ts.Spec.Image, Replicas: 1}),
		resources.HeadlessService(ts, "green"), resources.PublicService(ts, resources.ServingSelector(ts)),
		resources.AdminService(ts, resources.ServingSelector(ts)), resources.PodDisruptionBudget(ts),
		resources.ServerNetworkPolicy(ts, resources.OperatorPeer{Namespace: "kubeoauth-system", PodLabels: map[string]string{"app": "op"}}),
		resources.MigrationJob(ts, ts.Spec.Image)}
	if resources.ManagedDatabase(ts) {
		objs = append(objs, resources.DatabaseStatefulSet(ts), resources.DatabaseService(ts), resources.DatabaseNetworkPolicy(ts))
	}
	for _, obj := range objs {
		obj.SetNamespace(ts.Namespace)
		if err := k8s.Create(context.Background(), obj, client.DryRunAll); err != nil {
			refused = append(refused, err.Error())
		}
	}
	return refused
}

// An OAuthClient's credentials Secret is spec.secret.name, else <metadata.name>-oauth:
// one no Secret can take is refused at the OAuthClient, not after the client is
// registered on the token server.
// TestExternalTokenServerNames: an external TokenServer names no Service, StatefulSet
// or Job after itself, so any object name is its to take.
func TestExternalTokenServerNames(t *testing.T) {
	for _, name := range []string{"idp.corp", "1st-idp", strings.Repeat("e", 63)} {
		ts := tokenServer(func(s *v1.TokenServerSpec) {
			s.Image, s.Database = "", nil
			s.External = &v1.ExternalTokenServer{AdminURL: "https://auth-admin.internal:4445",
				TokenSecretRef: v1.SecretKeyReference{Name: "auth-admin"}}
		})
		ts.GenerateName, ts.Name = "", name
		create(t, ts, ok())
	}
}

// TestEmptyStringsAreAccepted: "" where a pod spec, a volume claim or the operator
// takes it is accepted, as tools such as Helm write it: a toleration's key with
// operator Exists (every taint), priorityClassName (none), storageClassName (a volume
// made beforehand, no dynamic provisioning), spec.secret.name (the default). Go
// objects drop "", so these are sent as JSON.
func TestEmptyStringsAreAccepted(t *testing.T) {
	unstructuredOf := func(obj client.Object) *unstructured.Unstructured {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
		if err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: m}
		u.SetGroupVersionKind(v1.GroupVersion.WithKind(reflect.TypeOf(obj).Elem().Name()))
		return u
	}
	set := func(u *unstructured.Unstructured, value any, path ...string) {
		if err := unstructured.SetNestedField(u.Object, value, path...); err != nil {
			t.Fatal(err)
		}
	}
	ts := unstructuredOf(tokenServer())
	set(ts, "", "spec", "pod", "priorityClassName")
	set(ts, []any{map[string]any{"key": "", "operator": "Exists"}}, "spec", "pod", "tolerations")
	set(ts, "", "spec", "database", "managed", "storageClassName")
	create(t, ts, ok())
	oc := unstructuredOf(oauthClient())
	set(oc, "", "spec", "secret", "name")
	create(t, oc, ok())
}

func TestOAuthClientSecretNames(t *testing.T) {
	const secretMsg = "must be a Secret name (a DNS subdomain)"
	named := func(name string, mutate ...func(*v1.OAuthClientSpec)) *v1.OAuthClient {
		c := oauthClient(mutate...)
		c.GenerateName, c.Name = "", name
		return c
	}
	for name, tt := range map[string]struct {
		oc   *v1.OAuthClient
		want rejected
	}{
		"a space":        {oauthClient(func(s *v1.OAuthClientSpec) { s.Secret.Name = "Grafana OAuth" }), reject("spec.secret.name", secretMsg)},
		"an underscore":  {oauthClient(func(s *v1.OAuthClientSpec) { s.Secret.Name = "grafana_oauth" }), reject("spec.secret.name", secretMsg)},
		"a trailing dot": {oauthClient(func(s *v1.OAuthClientSpec) { s.Secret.Name = "grafana." }), reject("spec.secret.name", secretMsg)},
		"a subdomain":    {oauthClient(func(s *v1.OAuthClientSpec) { s.Secret.Name = "grafana.oauth-1" }), ok()},
		"a metadata.name of 248 characters": {named(strings.Repeat("g", 248)),
			reject("metadata", "metadata.name must be at most 247 characters unless spec.secret.name is set")},
		"a metadata.name of 247 characters": {named(strings.Repeat("g", 247)), ok()},
		"a metadata.name of 250 characters and spec.secret.name": {named(strings.Repeat("g", 250),
			func(s *v1.OAuthClientSpec) { s.Secret.Name = "grafana-oauth" }), ok()},
		"a public client (no Secret) named with 250 characters": {named(strings.Repeat("p", 250),
			func(s *v1.OAuthClientSpec) { s.TokenEndpointAuthMethod = v1.AuthNone }), ok()},
	} {
		t.Run(name, func(t *testing.T) {
			create(t, tt.oc, tt.want)
			if tt.want != ok() || !clientspec.NeedsSecret(tt.oc) {
				return
			}
			secretName := clientspec.SecretName(tt.oc)
			sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: secretName, Namespace: tt.oc.Namespace}}
			if err := k8s.Create(context.Background(), sec, client.DryRunAll); err != nil {
				t.Fatalf("the OAuthClient was accepted, and its credentials Secret %q is then refused: %v", secretName, err)
			}
		})
	}
}
