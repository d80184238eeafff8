package v1alpha1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// GrantType is an OAuth 2.0 grant type the token server supports.
// +kubebuilder:validation:Enum=authorization_code;client_credentials;refresh_token;"urn:ietf:params:oauth:grant-type:device_code";"urn:ietf:params:oauth:grant-type:jwt-bearer"
type GrantType string

// Grant types.
const (
	GrantAuthorizationCode GrantType = "authorization_code"
	GrantClientCredentials GrantType = "client_credentials"
	GrantRefreshToken      GrantType = "refresh_token"
	// GrantDeviceCode is the device authorization grant (RFC 8628), for devices
	// without a browser: the user approves on another one; no redirect URIs.
	GrantDeviceCode GrantType = "urn:ietf:params:oauth:grant-type:device_code"
	// GrantJWTBearer exchanges an assertion signed by an issuer spec.jwtBearer
	// trusts for an access token (RFC 7523).
	GrantJWTBearer GrantType = "urn:ietf:params:oauth:grant-type:jwt-bearer" // #nosec G101 -- a grant type, not a credential
)

// ResponseType is an OAuth 2.0 / OpenID Connect response type of the authorization
// endpoint. The token server composes the authorization code flow only (no implicit
// or hybrid flow, as RFC 9700 advises), so code is the one it answers.
// +kubebuilder:validation:Enum=code
type ResponseType string

// TokenEndpointAuthMethod is how a client authenticates at the token endpoint.
// +kubebuilder:validation:Enum=client_secret_basic;client_secret_post;private_key_jwt;none
type TokenEndpointAuthMethod string

// Token endpoint authentication methods.
const (
	AuthClientSecretBasic TokenEndpointAuthMethod = "client_secret_basic"
	AuthClientSecretPost  TokenEndpointAuthMethod = "client_secret_post"
	AuthPrivateKeyJWT     TokenEndpointAuthMethod = "private_key_jwt"
	// AuthNone is a public client (a browser or native app): it holds no secret and
	// must use PKCE.
	AuthNone TokenEndpointAuthMethod = "none"
)

// DeletionPolicy says what deleting an OAuthClient does in the token server.
// +kubebuilder:validation:Enum=Delete;Orphan
type DeletionPolicy string

// Deletion policies.
const (
	// DeletionPolicyDelete removes the client from the token server and revokes every
	// token issued to it.
	DeletionPolicyDelete DeletionPolicy = "Delete"
	// DeletionPolicyOrphan leaves the client and its tokens in the token server.
	DeletionPolicyOrphan DeletionPolicy = "Orphan"
)

// OAuthClientSpec is the desired state of one OAuth client on one TokenServer.
//
// +kubebuilder:validation:XValidation:rule="!has(self.grantTypes) || !('authorization_code' in self.grantTypes) || (has(self.redirectURIs) && size(self.redirectURIs) > 0)",fieldPath=".redirectURIs",reason=FieldValueRequired,message="redirectURIs needs at least one URI when grantTypes includes authorization_code"
// +kubebuilder:validation:XValidation:rule="!has(self.grantTypes) || !('refresh_token' in self.grantTypes) || 'authorization_code' in self.grantTypes || 'urn:ietf:params:oauth:grant-type:device_code' in self.grantTypes",fieldPath=".grantTypes",message="grantTypes: refresh_token needs a grant that issues refresh tokens (authorization_code or urn:ietf:params:oauth:grant-type:device_code); client_credentials and jwt-bearer issue none"
// +kubebuilder:validation:XValidation:rule="!has(self.grantTypes) || !('urn:ietf:params:oauth:grant-type:jwt-bearer' in self.grantTypes) || has(self.jwtBearer)",fieldPath=".jwtBearer",reason=FieldValueRequired,message="jwtBearer needs at least one trusted issuer when grantTypes includes urn:ietf:params:oauth:grant-type:jwt-bearer"
// +kubebuilder:validation:XValidation:rule="!has(self.grantTypes) || !('urn:ietf:params:oauth:grant-type:jwt-bearer' in self.grantTypes) || (has(self.skipConsent) && self.skipConsent)",fieldPath=".skipConsent",message="grantTypes urn:ietf:params:oauth:grant-type:jwt-bearer needs skipConsent: true: the grant is for first-party clients only (the TokenServer's firstPartyNamespaces), as its tokens name a subject no user consented for"
// +kubebuilder:validation:XValidation:rule="!has(self.grantTypes) || !('urn:ietf:params:oauth:grant-type:jwt-bearer' in self.grantTypes) || !has(self.tokenEndpointAuthMethod) || self.tokenEndpointAuthMethod != 'none'",fieldPath=".tokenEndpointAuthMethod",message="grantTypes cannot include urn:ietf:params:oauth:grant-type:jwt-bearer when tokenEndpointAuthMethod is none: the assertion would be the only credential, and anyone holding one from the issuer would get tokens"
// +kubebuilder:validation:XValidation:rule="!has(self.jwtBearer) || (has(self.grantTypes) && 'urn:ietf:params:oauth:grant-type:jwt-bearer' in self.grantTypes)",fieldPath=".jwtBearer",message="jwtBearer is used only with grant type urn:ietf:params:oauth:grant-type:jwt-bearer: add it to grantTypes or remove jwtBearer"
// +kubebuilder:validation:XValidation:rule="!has(self.jwtBearer) || self.jwtBearer.trustedIssuers.all(t, !has(t.scopes) || t.scopes.all(s, has(self.scopes) && s in self.scopes))",fieldPath=".jwtBearer.trustedIssuers",message="jwtBearer.trustedIssuers[].scopes must each be one of spec.scopes: a trusted issuer cannot give the client more than the client may have"
// +kubebuilder:validation:XValidation:rule="!has(self.responseTypes) || !self.responseTypes.exists(r, r.startsWith('code')) || (has(self.grantTypes) && 'authorization_code' in self.grantTypes)",fieldPath=".responseTypes",message="responseTypes with code need grantTypes to include authorization_code"
// +kubebuilder:validation:XValidation:rule="!has(self.tokenEndpointAuthMethod) || self.tokenEndpointAuthMethod != 'none' || !has(self.grantTypes) || !('client_credentials' in self.grantTypes)",fieldPath=".grantTypes",message="grantTypes cannot include client_credentials when tokenEndpointAuthMethod is none: a public client has no secret to authenticate with"
// +kubebuilder:validation:XValidation:rule="!has(self.tokenEndpointAuthMethod) || self.tokenEndpointAuthMethod != 'private_key_jwt' || has(self.jwks) || has(self.jwksURI)",fieldPath=".tokenEndpointAuthMethod",message="tokenEndpointAuthMethod private_key_jwt needs the client's public keys in jwks or jwksURI"
// +kubebuilder:validation:XValidation:rule="!(has(self.jwks) && has(self.jwksURI))",fieldPath=".jwksURI",message="set jwks or jwksURI, not both"
// +kubebuilder:validation:XValidation:rule="has(self.clientID) == has(oldSelf.clientID) && (!has(self.clientID) || self.clientID == oldSelf.clientID)",fieldPath=".clientID",message="clientID cannot be set, changed or removed after creation: apps and tokens hold it"
type OAuthClientSpec struct {
	// serverRef is the TokenServer this client is registered on. It cannot change.
	// +kubebuilder:validation:XValidation:rule="self == oldSelf",message="serverRef cannot change after creation: create a new OAuthClient on the other server instead"
	ServerRef ServerReference `json:"serverRef"`

	// clientID to register. Unset: derived from the TokenServer and this resource's
	// namespace and name ("<namespace>-<name>-<8 hex>"), so re-applying from git
	// yields the same ID. A custom ID is "<namespace>_<suffix>": no namespace or
	// resource name holds a '_', so no namespace can choose another's ID, derived or
	// custom. Only clients in the TokenServer's own namespace may choose other IDs
	// (not one in a tenant's range nor one shaped like a derived ID). Refused:
	// Ready=False ClientIDNotAllowed; an ID another namespace registered: Ready=False
	// ClientIDConflict. Letters, digits and . _ ~ - only: a client ID travels in URL
	// paths and in HTTP Basic authentication, where ':' cannot appear.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	// +kubebuilder:validation:XValidation:rule=`self.matches('^[A-Za-z0-9._~-]+$')`,message="spec.clientID may hold only letters, digits and . _ ~ - (it travels in URL paths and HTTP Basic authentication)"
	// +optional
	ClientID string `json:"clientID,omitempty"`

	// clientName is the app's name shown on the consent and connected-apps pages.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=100
	// +kubebuilder:validation:XValidation:rule=`!self.contains('\u0000')`,message="must not contain a NUL character (\\u0000): the token server keeps it in PostgreSQL, which cannot store one"
	ClientName string `json:"clientName"`

	// owner is who the app claims to be run by, shown on the consent page apart from
	// the verified owner (this resource's namespace).
	// +optional
	Owner *Owner `json:"owner,omitempty"`

	// logoURI of the app's logo on the consent page.
	// +optional
	LogoURI URL `json:"logoURI,omitempty"`
	// clientURI is the app's home page.
	// +optional
	ClientURI URL `json:"clientURI,omitempty"`
	// policyURI is the app's privacy policy.
	// +optional
	PolicyURI URL `json:"policyURI,omitempty"`
	// tosURI is the app's terms of service.
	// +optional
	TosURI URL `json:"tosURI,omitempty"`

	// grantTypes the client may use.
	// +kubebuilder:default={authorization_code}
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=5
	// +optional
	GrantTypes []GrantType `json:"grantTypes,omitempty"`

	// responseTypes the client may request at the authorization endpoint. Unset:
	// code, when grantTypes includes authorization_code.
	// +listType=set
	// +kubebuilder:validation:MaxItems=1
	// +optional
	ResponseTypes []ResponseType `json:"responseTypes,omitempty"`

	// redirectURIs the authorization endpoint may send the user back to, matched
	// exactly.
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +optional
	RedirectURIs []URL `json:"redirectURIs,omitempty"`

	// postLogoutRedirectURIs the end-session endpoint (OpenID Connect RP-Initiated
	// Logout) may send the user to after signing out, matched exactly; any other
	// post_logout_redirect_uri is refused with an error page.
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +optional
	PostLogoutRedirectURIs []URL `json:"postLogoutRedirectURIs,omitempty"`

	// scopes the client may request.
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Scopes []Scope `json:"scopes,omitempty"`

	// audience values the client may request for its tokens: URLs of the APIs they
	// are for, or client IDs of OAuthClients in this namespace. Another namespace's
	// client ID is refused (Ready=False): a token for it could pass for that app's
	// ID token.
	// +listType=set
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=2048
	// +kubebuilder:validation:items:XValidation:rule=`!self.contains('\u0000')`,message="must not contain a NUL character (\\u0000): the token server keeps it in PostgreSQL, which cannot store one"
	// +optional
	Audience []string `json:"audience,omitempty"`

	// tokenEndpointAuthMethod: client_secret_basic, client_secret_post,
	// private_key_jwt, or none for a public client, which must use PKCE.
	// +kubebuilder:default=client_secret_basic
	// +optional
	TokenEndpointAuthMethod TokenEndpointAuthMethod `json:"tokenEndpointAuthMethod,omitempty"`

	// jwks holds the client's public keys (for private_key_jwt).
	// +optional
	JWKS *JSONWebKeySet `json:"jwks,omitempty"`

	// jwksURI is where the client publishes its public keys (for private_key_jwt).
	// +optional
	JWKSURI URL `json:"jwksURI,omitempty"`

	// jwtBearer says whose signed assertions the client may exchange for access
	// tokens (grant type urn:ietf:params:oauth:grant-type:jwt-bearer, RFC 7523). The
	// grant needs skipConsent and a first-party namespace; outside one, the operator
	// registers the client without it.
	// +optional
	JWTBearer *JWTBearer `json:"jwtBearer,omitempty"`

	// skipConsent lets a first-party app skip the consent page. It counts only for
	// clients in the TokenServer's firstPartyNamespaces.
	// +optional
	SkipConsent bool `json:"skipConsent,omitempty"`

	// tokenLifespans override the TokenServer's for this client.
	// +optional
	TokenLifespans *TokenLifespans `json:"tokenLifespans,omitempty"`

	// secret holding the client's credentials (client_id, client_secret, issuer,
	// token_url).
	// +kubebuilder:default={}
	// +optional
	Secret ClientSecret `json:"secret,omitzero"`

	// deletionPolicy: Delete removes the client from the token server and revokes its
	// tokens; Orphan leaves them.
	// +kubebuilder:default=Delete
	// +optional
	DeletionPolicy DeletionPolicy `json:"deletionPolicy,omitempty"`
}

// JWTBearer is the trust behind the JWT bearer grant (RFC 7523): a token is issued
// for an assertion only when an issuer listed here signed it, for a subject it may
// assert, with scopes it may give. The client authenticates as well, and must be
// first-party (skipConsent in one of the TokenServer's firstPartyNamespaces): the
// subject an issuer asserts is taken as is, so whoever sets this trust can speak for
// any user of the whole server, which only the platform team may allow.
type JWTBearer struct {
	// trustedIssuers whose assertions the client may exchange.
	// +listType=map
	// +listMapKey=issuer
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	TrustedIssuers []TrustedJWTIssuer `json:"trustedIssuers"`
}

// TrustedJWTIssuer is one issuer of JWT bearer assertions: its keys, the subjects
// it may assert and the scopes it may give.
// +kubebuilder:validation:XValidation:rule="has(self.jwks) != has(self.jwksURI)",message="set jwks or jwksURI (exactly one): the keys the issuer's assertions are checked with"
// +kubebuilder:validation:XValidation:rule="(has(self.subjects) && size(self.subjects) > 0) != (has(self.allowAnySubject) && self.allowAnySubject)",message="set subjects or allowAnySubject: true (exactly one): which subjects the issuer may assert"
type TrustedJWTIssuer struct {
	// issuer is the assertions' iss claim.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule=`!self.contains('\u0000')`,message="must not contain a NUL character (\\u0000): the token server keeps it in PostgreSQL, which cannot store one"
	Issuer string `json:"issuer"`
	// jwks holds the issuer's public keys.
	// +optional
	JWKS *JSONWebKeySet `json:"jwks,omitempty"`
	// jwksURI is where the issuer publishes its public keys.
	// +optional
	JWKSURI URL `json:"jwksURI,omitempty"`
	// subjects the issuer may assert (the sub claim), which become the tokens'
	// subject.
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=255
	// +optional
	// +kubebuilder:validation:items:XValidation:rule=`!self.contains('\u0000')`,message="must not contain a NUL character (\\u0000): the token server keeps it in PostgreSQL, which cannot store one"
	Subjects []string `json:"subjects,omitempty"`
	// allowAnySubject lets the issuer assert any subject: it is then trusted to speak
	// for every user of the whole token server.
	// +optional
	AllowAnySubject bool `json:"allowAnySubject,omitempty"`
	// scopes the issuer's assertions may be exchanged for; each must be one of the
	// client's spec.scopes. Unset: tokens without scopes only.
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Scopes []Scope `json:"scopes,omitempty"`
}

// ServerReference names a TokenServer.
type ServerReference struct {
	// name of the TokenServer.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// namespace of the TokenServer; unset: the OAuthClient's own.
	// +kubebuilder:validation:MaxLength=63
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// Owner is who an app claims to be run by. It is free text; the consent page shows it
// apart from the verified owner, the namespace.
type Owner struct {
	// team running the app.
	// +kubebuilder:validation:MaxLength=100
	// +kubebuilder:validation:XValidation:rule=`!self.contains('\u0000')`,message="must not contain a NUL character (\\u0000): the token server keeps it in PostgreSQL, which cannot store one"
	// +optional
	Team string `json:"team,omitempty"`
	// contact for the app, such as an e-mail address.
	// +kubebuilder:validation:MaxLength=254
	// +optional
	// +kubebuilder:validation:XValidation:rule=`!self.contains('\u0000')`,message="must not contain a NUL character (\\u0000): the token server keeps it in PostgreSQL, which cannot store one"
	Contact string `json:"contact,omitempty"`
}

// JSONWebKeySet is a set of public keys (RFC 7517).
type JSONWebKeySet struct {
	// keys of the set.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=8
	Keys []JSONWebKey `json:"keys"`
}

// JSONWebKey is one public key (RFC 7517). Private members are not part of the schema,
// so a private key pasted by mistake is refused as an unknown field.
//
// +kubebuilder:validation:XValidation:rule="self.kty != 'EC' || (has(self.crv) && has(self.x) && has(self.y))",message="an EC key needs crv, x and y"
// +kubebuilder:validation:XValidation:rule="self.kty != 'RSA' || (has(self.n) && has(self.e))",message="an RSA key needs n and e"
// +kubebuilder:validation:XValidation:rule="self.kty != 'OKP' || (has(self.crv) && has(self.x))",message="an OKP key needs crv and x"
type JSONWebKey struct {
	// kty is the key type.
	// +kubebuilder:validation:Enum=EC;RSA;OKP
	Kty string `json:"kty"`
	// kid is the key ID.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	// +kubebuilder:validation:XValidation:rule=`!self.contains('\u0000')`,message="must not contain a NUL character (\\u0000): the token server keeps it in PostgreSQL, which cannot store one"
	Kid string `json:"kid,omitempty"`
	// use of the key.
	// +kubebuilder:validation:Enum=sig;enc
	// +optional
	Use string `json:"use,omitempty"`
	// alg the key is used with, such as ES256 or RS256.
	// +kubebuilder:validation:MaxLength=16
	// +optional
	Alg string `json:"alg,omitempty"`
	// crv of an EC or OKP key.
	// +kubebuilder:validation:Enum=P-256;P-384;P-521;Ed25519
	// +optional
	Crv string `json:"crv,omitempty"`
	// x coordinate (base64url).
	// +kubebuilder:validation:MaxLength=256
	// +optional
	X string `json:"x,omitempty"`
	// y coordinate (base64url).
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Y string `json:"y,omitempty"`
	// n is the RSA modulus (base64url).
	// +kubebuilder:validation:MaxLength=2048
	// +optional
	N string `json:"n,omitempty"`
	// e is the RSA exponent (base64url).
	// +kubebuilder:validation:MaxLength=16
	// +optional
	E string `json:"e,omitempty"`
}

// TokenLifespans override token lifespans for one client. Each is bounded: every
// token is a row of the shared database until it expires, so a tenant's lifespan of
// years would keep all its tokens for years (the token server refuses the same).
type TokenLifespans struct {
	// accessToken lifespan, at most 24h.
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self) <= duration('24h')",message="must be at most 24h"
	// +optional
	AccessToken Duration `json:"accessToken,omitempty"`
	// refreshToken lifespan, at most 8760h (a year).
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self) <= duration('8760h')",message="must be at most 8760h (a year)"
	// +optional
	RefreshToken Duration `json:"refreshToken,omitempty"`
	// idToken lifespan, at most 24h.
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self) <= duration('24h')",message="must be at most 24h"
	// +optional
	IDToken Duration `json:"idToken,omitempty"`
	// authorizationCode lifespan, at most 10m (RFC 6749 section 4.1.2).
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self) <= duration('10m')",message="must be at most 10m (RFC 6749 section 4.1.2)"
	// +optional
	AuthorizationCode Duration `json:"authorizationCode,omitempty"`
}

// ClientSecret is the Secret holding a client's credentials.
type ClientSecret struct {
	// name of the Secret; unset: "<OAuthClient name>-oauth".
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule=`size(self) == 0 || self.matches(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')`,message="must be a Secret name (a DNS subdomain): lowercase letters, digits, '-' and '.', beginning and ending with a letter or digit"
	// +optional
	Name string `json:"name,omitempty"`
	// create the Secret with a generated secret (true), or wait for an existing one
	// holding client_secret, for example from an external-secrets tool (false).
	// +kubebuilder:default=true
	// +optional
	Create *bool `json:"create,omitempty"`
	// rotation replaces a generated secret on a schedule.
	// +optional
	Rotation *SecretRotation `json:"rotation,omitempty"`
}

// SecretRotation replaces a client secret on a schedule; the previous secret keeps
// working during the overlap so apps can pick up the new one.
//
// +kubebuilder:validation:XValidation:rule="!self.every.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || !self.overlap.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self.overlap) < duration(self.every)",fieldPath=".overlap",message="overlap must be shorter than every: otherwise more than two secrets would be valid at once"
type SecretRotation struct {
	// every is how often the secret is replaced, such as 2160h (90 days).
	Every Duration `json:"every"`
	// overlap is how long the previous secret keeps working.
	// +kubebuilder:default="24h"
	// +optional
	Overlap Duration `json:"overlap,omitempty"`
}

// OAuthClientStatus is the observed state of an OAuthClient.
type OAuthClientStatus struct {
	// conditions: Ready; Reconciling while the operator is still at it, Stalled when only a person can move it on (see docs/operator.md#conditions).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// clientID registered on the token server.
	// +optional
	ClientID string `json:"clientID,omitempty"`
	// legacyClientID is a custom spec.clientID this object registered under the old
	// "<namespace>-<suffix>" rule, which new OAuthClients can no longer choose. It
	// stays accepted for this object, also after the namespace loses admission and
	// clientID is cleared, so that the client comes back when it is admitted again.
	// +optional
	LegacyClientID string `json:"legacyClientID,omitempty"`
	// secretName of the Secret holding the credentials.
	// +optional
	SecretName string `json:"secretName,omitempty"`
	// secretRotatedAt is when the current secret was generated.
	// +optional
	SecretRotatedAt *metav1.Time `json:"secretRotatedAt,omitempty"`
}

// OAuthClient is an OAuth 2.0 client registered on a TokenServer. Its namespace is its
// verified owner.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=oac,categories=kubeoauth;oauth
// +kubebuilder:validation:XValidation:rule="(has(self.spec.secret) && has(self.spec.secret.name) && size(self.spec.secret.name) > 0) || (has(self.spec.tokenEndpointAuthMethod) && self.spec.tokenEndpointAuthMethod in ['none', 'private_key_jwt']) || size(self.metadata.name) <= 247",fieldPath=".metadata",message="metadata.name must be at most 247 characters unless spec.secret.name is set (or the client has no secret: tokenEndpointAuthMethod none or private_key_jwt): the credentials Secret is named <metadata.name>-oauth, and a Secret name is at most 253 characters"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Client ID",type=string,JSONPath=`.status.clientID`
// +kubebuilder:printcolumn:name="Server",type=string,JSONPath=`.spec.serverRef.name`
// +kubebuilder:printcolumn:name="Secret",type=string,JSONPath=`.status.secretName`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type OAuthClient struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   OAuthClientSpec   `json:"spec"`
	Status OAuthClientStatus `json:"status,omitzero"`
}

// OAuthClientList is a list of OAuthClients.
//
// +kubebuilder:object:root=true
type OAuthClientList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []OAuthClient `json:"items"`
}
