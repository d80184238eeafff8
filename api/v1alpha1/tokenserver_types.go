package v1alpha1

import (
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TokenServerSpec is the desired state of one bundled OAuth 2.0 / OpenID Connect
// authorization server, or of the link to one run elsewhere (external).
//
// +kubebuilder:validation:XValidation:rule="has(self.external) || has(self.image)",fieldPath=".image",reason=FieldValueRequired,message="image is required: the token server image to run (unless spec.external points at a token server run elsewhere)"
// +kubebuilder:validation:XValidation:rule="has(self.external) || has(self.database)",fieldPath=".database",reason=FieldValueRequired,message="database is required: set database.managed for a bundled PostgreSQL or database.external for your own (unless spec.external points at a token server run elsewhere)"
// +kubebuilder:validation:XValidation:rule="!has(self.external) || (!has(self.image) && !has(self.database))",fieldPath=".external",message="external cannot be combined with image or database: an external token server is run, and upgraded, elsewhere"
// +kubebuilder:validation:XValidation:rule="!has(self.external) || !has(self.pod)",fieldPath=".pod",message="pod is for bundled token servers: an external token server runs its own pods"
// +kubebuilder:validation:XValidation:rule="!has(self.external) || !has(self.jobs) || !has(self.jobs.pod)",fieldPath=".jobs.pod",message="jobs.pod is for bundled token servers: an external token server runs no Jobs of the operator's"
// +kubebuilder:validation:XValidation:rule="!has(self.external) || !has(self.branding)",fieldPath=".branding",message="branding is for bundled token servers: an external token server serves its own pages"
// +kubebuilder:validation:XValidation:rule="!has(self.external) || !has(self.metrics)",fieldPath=".metrics",message="metrics is for bundled token servers: an external token server's network is its own"
// +kubebuilder:validation:XValidation:rule="!has(self.upgrade) || !has(self.upgrade.copy) || !has(self.upgrade.copy.targetSecretRef) || (has(self.database) && has(self.database.external))",fieldPath=".upgrade.copy.targetSecretRef",message="spec.upgrade.copy.targetSecretRef is only for spec.database.external: a bundled database (database.managed) is copied into a second database of its own PostgreSQL"
type TokenServerSpec struct {
	// issuer is the public URL of the server, the `iss` of every token and the base of
	// its discovery document. https (http only for localhost); no query or fragment.
	// +kubebuilder:validation:XValidation:rule="!self.contains('?')",message="must not contain a query (?...): OpenID Connect issuers are scheme, host and optional path only"
	Issuer URL `json:"issuer"`

	// image of the token server. Changing it starts a blue-green upgrade.
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule=`size(self) > 0 && !self.matches(r'[\p{Z}\p{Cc}]')`,message="must be a non-empty image reference without whitespace (spaces, tabs, newlines, leading or trailing too) or control characters, such as ghcr.io/kubeoauth/tokenserver:v0.1.0: no pod can run one with them"
	// +optional
	Image string `json:"image,omitempty"`

	// replicas of the token server. All state lives in PostgreSQL, so replicas scale
	// out freely behind the Service.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// database the token server keeps its state in.
	// +optional
	Database *DatabaseSpec `json:"database,omitempty"`

	// pod sets the token server pods' resources, scheduling and metadata; the Jobs
	// take its scheduling, pull secrets, labels and annotations too (under
	// spec.jobs.pod's labels and annotations). A change rolls
	// the pods in place (no blue-green upgrade: that is for image changes).
	// +optional
	Pod *PodSettings `json:"pod,omitempty"`

	// jobs sets the resources and pod metadata of the operator's Jobs and when a
	// finished one goes.
	// +kubebuilder:default={}
	// +optional
	Jobs JobSettings `json:"jobs,omitzero"`

	// tokens sets token formats, lifespans and signing.
	// +kubebuilder:default={}
	// +optional
	Tokens TokenSettings `json:"tokens,omitzero"`

	// login says how users sign in on the login page.
	// +optional
	Login *LoginSpec `json:"login,omitempty"`

	// scopeDescriptions are shown on the consent page, one line per requested scope.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=128
	// +optional
	ScopeDescriptions []ScopeDescription `json:"scopeDescriptions,omitempty"`

	// branding puts the organisation's name and logo on the login, consent, account
	// and other pages, and can replace their templates (docs/identity.md "Branding
	// and custom pages"). Bundled servers only.
	// +optional
	Branding *Branding `json:"branding,omitempty"`

	// clientNamespaces says which namespaces may register OAuthClients on this server,
	// besides the TokenServer's own namespace, which always may. Unset: only the
	// TokenServer's own namespace.
	// +optional
	ClientNamespaces *NamespacePolicy `json:"clientNamespaces,omitempty"`

	// firstPartyNamespaces says whose OAuthClients may skip consent (skipConsent) and
	// whose ConsentGrants are pushed as pre-approved consent. Unset: none.
	// +optional
	FirstPartyNamespaces *NamespacePolicy `json:"firstPartyNamespaces,omitempty"`

	// progressDeadline: a server that waits this long without progress reads
	// Stalled=True, reason ProgressDeadlineExceeded, naming the cause, as a
	// Deployment's progressDeadlineSeconds does, and reads Ready again by itself once
	// the wait is over. It bounds a bundled server's wait for its pods outside an
	// upgrade (first install, a change that rolls the pods, a scale; progress is a pod
	// more ready, the next phase reached, a new generation), saying what keeps them
	// back (a quota or policy refusing them, a pod that cannot be scheduled); a wait
	// for a Secret the TokenServer names (another Secret starts the count again); and
	// a wait for the admin API to answer (but during an upgrade). An upgrade has its
	// own (spec.upgrade.progressDeadline).
	// +kubebuilder:default="10m"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self) >= duration('1s')",message="must be at least 1s"
	// +optional
	ProgressDeadline Duration `json:"progressDeadline,omitempty"`

	// metrics: who may read the token server's /metrics (port 4446, named metrics).
	// +optional
	Metrics *MetricsAccess `json:"metrics,omitempty"`

	// upgrade settings for image changes.
	// +kubebuilder:default={}
	// +optional
	Upgrade UpgradeSettings `json:"upgrade,omitzero"`

	// external points at a token server run elsewhere: the operator then manages
	// clients and grants only, and image, database and upgrades do not apply.
	// +optional
	External *ExternalTokenServer `json:"external,omitempty"`
}

// Branding is what the token server's pages show of the organisation that runs it.
type Branding struct {
	// displayName is shown in every page's title and header and as the logo's alt
	// text, such as "Example Corp".
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule=`!self.matches(r'[\x00-\x1f\x7f-\x9f\x{2028}\x{2029}\x{202a}-\x{202e}\x{2066}-\x{2069}]')`,message="must be one line of text, without control characters, line or paragraph separators (U+2028, U+2029), or bidirectional overrides and isolates (U+202A to U+202E, U+2066 to U+2069)"
	// +optional
	DisplayName string `json:"displayName,omitempty"`
	// logoURL is the logo at the top of every page: an https URL without user info,
	// such as https://cdn.example.com/logo.svg (the pages' Content-Security-Policy
	// admits images from its origin only), or a small image inline as
	// data:image/png;base64,... or data:image/svg+xml;base64,... An img element runs no
	// script of an SVG. At most 32768 bytes: the token server counts bytes, so a
	// non-ASCII character takes two to four.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=32768
	// +kubebuilder:validation:XValidation:rule="size(bytes(self)) <= 32768",message="must be at most 32768 bytes (UTF-8: a non-ASCII character takes two to four): the token server counts bytes, and a longer logo URL fails every pod's start; percent-encode the path or host the logo at a shorter URL"
	// +kubebuilder:validation:XValidation:rule=`self.matches(r'^https://[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?([/?][^\s\x22\x27<>\\]*)?$') || self.matches(r'^data:image/(png|svg\+xml);base64,[A-Za-z0-9+/]+={0,2}$')`,message="must be an https URL without user info, quotes or spaces, with a host name and a port up to 65535 (such as https://cdn.example.com/logo.svg) or an inline image as data:image/png;base64,... or data:image/svg+xml;base64,...; http (mixed content), javascript: and other data: types are refused"
	// +optional
	LogoURL string `json:"logoURL,omitempty"`
	// templatesConfigMapRef names a ConfigMap whose keys are template file names
	// (login.html, consent.html, account.html, logout.html, error.html, layout.html
	// and those of pages added later): each replaces the built-in template of that
	// name. The operator checks them before any pod sees them and copies them into
	// the ConfigMap <name>-pages, which the pods mount: a change rolls the pods; a
	// missing ConfigMap or a template that cannot be used is reported in Degraded,
	// and the pods keep the last good templates.
	// +optional
	TemplatesConfigMapRef *LocalObjectReference `json:"templatesConfigMapRef,omitempty"`
}

// DatabaseSpec chooses the PostgreSQL database: exactly one of managed or external.
//
// +kubebuilder:validation:XValidation:rule="has(self.managed) != has(self.external)",message="set exactly one of database.managed (a bundled PostgreSQL) or database.external (a DSN in a Secret)"
type DatabaseSpec struct {
	// managed runs a bundled PostgreSQL StatefulSet beside the token server.
	// +optional
	Managed *ManagedDatabase `json:"managed,omitempty"`
	// external uses a PostgreSQL you run (a managed database, a CloudNativePG
	// cluster), reached through a DSN kept in a Secret.
	// +optional
	External *ExternalDatabase `json:"external,omitempty"`
}

// ManagedDatabase is a PostgreSQL StatefulSet the operator runs.
type ManagedDatabase struct {
	// storageSize of the database volume.
	// +kubebuilder:default="1Gi"
	// +kubebuilder:validation:XValidation:rule="quantity(string(self)).isGreaterThan(quantity('0'))",message="must be greater than zero"
	// +optional
	StorageSize resource.Quantity `json:"storageSize,omitzero"`
	// storageClassName of the database volume claim; unset uses the cluster default,
	// "" binds a volume made beforehand (no dynamic provisioning).
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule=`size(self) == 0 || self.matches(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')`,message="must be a StorageClass name (a ^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$ subdomain): lowercase letters, digits, '-' and '.', beginning and ending with a letter or digit"
	// +optional
	StorageClassName *string `json:"storageClassName,omitempty"`
	// image of PostgreSQL, pinned to a patch release by default so that every node
	// runs the same one; set a digest to pin it harder. A change restarts PostgreSQL
	// on the same data; another major version needs a dump and restore.
	// +kubebuilder:default="postgres:15.18"
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:XValidation:rule=`!self.matches(r'[\p{Z}\p{Cc}]')`,message="must be an image reference without whitespace (spaces, tabs, newlines, leading or trailing too) or control characters, such as postgres:15.18: no pod can run one with them"
	// +optional
	Image string `json:"image,omitempty"`
	// pod sets the PostgreSQL pod's resources, scheduling and metadata. A change
	// restarts PostgreSQL (one replica): the token server waits for it.
	// +optional
	Pod *PodSettings `json:"pod,omitempty"`
}

// ExternalDatabase is a PostgreSQL the user runs.
type ExternalDatabase struct {
	// secretRef names the Secret key holding a lib/pq DSN, such as
	// "postgres://user:pass@host:5432/db?sslmode=verify-full". The key defaults to "dsn".
	SecretRef SecretKeyReference `json:"secretRef"`
}

// TokenSettings sets token formats, lifespans and signing.
type TokenSettings struct {
	// accessTokenFormat: opaque (random, checked by introspection) or jwt (RFC 9068,
	// checked locally by resource servers).
	// +kubebuilder:validation:Enum=opaque;jwt
	// +kubebuilder:default=opaque
	// +optional
	AccessTokenFormat string `json:"accessTokenFormat,omitempty"`
	// accessTokenLifespan of access tokens.
	// +kubebuilder:default="1h"
	// +optional
	AccessTokenLifespan Duration `json:"accessTokenLifespan,omitempty"`
	// refreshTokenLifespan of refresh tokens.
	// +kubebuilder:default="720h"
	// +optional
	RefreshTokenLifespan Duration `json:"refreshTokenLifespan,omitempty"`
	// idTokenLifespan of OpenID Connect ID tokens.
	// +kubebuilder:default="1h"
	// +optional
	IDTokenLifespan Duration `json:"idTokenLifespan,omitempty"`
	// authorizationCodeLifespan of authorization codes.
	// +kubebuilder:default="10m"
	// +optional
	AuthorizationCodeLifespan Duration `json:"authorizationCodeLifespan,omitempty"`
	// refreshGracePeriod is how long a just-rotated refresh token still works (and
	// yields tokens of the same chain), for clients that retry or refresh from two
	// places at once. At most 5m; unset or "0s" means strict rotation.
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$')",message="must be a duration such as 0s, 30s or 2m (units: ns, us, ms, s, m, h)"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self) <= duration('5m')",message="must be at most 5m: a longer grace period keeps stolen refresh tokens usable"
	// +optional
	RefreshGracePeriod string `json:"refreshGracePeriod,omitempty"`
	// signingAlgorithm of ID tokens and JWT access tokens.
	// +kubebuilder:validation:Enum=ES256;RS256
	// +kubebuilder:default=ES256
	// +optional
	SigningAlgorithm string `json:"signingAlgorithm,omitempty"`
	// signingKeyRotation is how often a bundled server gets a new signing key. The
	// previous key stays in the JWKS until the next rotation, so tokens signed before
	// still verify. External servers rotate their own keys.
	// +kubebuilder:default="2160h"
	// +optional
	SigningKeyRotation Duration `json:"signingKeyRotation,omitempty"`
	// requirePKCE: every authorization-code client must use PKCE (S256), as RFC 9700
	// asks. Set false only for legacy confidential apps that cannot send a code
	// challenge; public clients need PKCE either way. Bundled servers only.
	// +kubebuilder:default=true
	// +optional
	RequirePKCE *bool `json:"requirePKCE,omitempty"`
	// requirePushedAuthorizationRequests: every authorization request must first be
	// pushed to /oauth2/par by the authenticated client (RFC 9126), so that its
	// parameters never travel through the browser; an authorization request without
	// a request_uri from there is refused. Bundled servers only.
	// +optional
	RequirePushedAuthorizationRequests bool `json:"requirePushedAuthorizationRequests,omitempty"`
	// deviceCodeLifespan: how long a device code and its user code of the device
	// authorization grant (RFC 8628) can be used; unset means 10m. Bundled servers
	// only.
	// +optional
	DeviceCodeLifespan Duration `json:"deviceCodeLifespan,omitempty"`
	// devicePollInterval: how long a device waits between two polls of the token
	// endpoint in the device authorization grant, in whole seconds as RFC 8628 sends
	// it; one that polls sooner gets slow_down and 5s more. Unset means 5s. Bundled
	// servers only.
	// +kubebuilder:validation:MaxLength=16
	// +kubebuilder:validation:XValidation:rule="self.matches('^[1-9][0-9]?s$')",message="must be whole seconds from 1s to 99s, such as 5s: RFC 8628 gives the interval in seconds"
	// +optional
	DevicePollInterval string `json:"devicePollInterval,omitempty"`
}

// LoginSpec says how users sign in: with a password from a Secret of users, through
// an upstream OpenID Connect provider, or either (the login page then offers both).
//
// +kubebuilder:validation:XValidation:rule="has(self.usersSecretRef) || has(self.upstreamOIDC)",message="set login.usersSecretRef, login.upstreamOIDC or both"
// +kubebuilder:validation:XValidation:rule="!has(self.clientIPHeader) || has(self.trustedProxies)",fieldPath=".trustedProxies",message="login.clientIPHeader needs login.trustedProxies: the CIDRs of the proxies (your ingress controller's pods) whose header is believed"
type LoginSpec struct {
	// usersSecretRef names a Secret key holding users: either one "name:bcrypt-hash"
	// per line (htpasswd format), or a YAML list of users with username, passwordHash,
	// name, email, emailVerified and groups, for the ID token and userinfo claims
	// (docs/identity.md). The key defaults to "users".
	// +optional
	UsersSecretRef *SecretKeyReference `json:"usersSecretRef,omitempty"`
	// upstreamOIDC signs users in at another OpenID Connect provider (your company's
	// identity provider: Keycloak, Dex, Okta, Entra ID, Google...). Register
	// `<issuer>/login/upstream/callback` as the redirect URI there
	// (docs/integrations/upstream-oidc.md).
	// +optional
	UpstreamOIDC *UpstreamOIDC `json:"upstreamOIDC,omitempty"`
	// clientIPHeader names the header in which the proxy in front of the token server
	// (your ingress controller) passes the client's address, such as X-Forwarded-For
	// (its last entry is used) or X-Real-IP, for the per-address throttle of failed
	// sign-ins and device codes; it is believed only from trustedProxies. Unset, the
	// address is the connection's peer: behind an ingress that is the ingress's pod
	// for every user, so that anyone's 20 failed sign-ins throttle everyone's.
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9-]+$`
	// +optional
	ClientIPHeader string `json:"clientIPHeader,omitempty"`
	// trustedProxies are the CIDRs of the proxies whose clientIPHeader is believed
	// (your ingress controller's pod network); from any other peer the header is
	// ignored and the peer's address counts.
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="must be a CIDR such as 10.0.0.0/8 or fd00::/8"
	// +optional
	TrustedProxies []string `json:"trustedProxies,omitempty"`
}

// UpstreamOIDC is an OpenID Connect provider users sign in with: authorization code
// with PKCE, the ID token verified against the provider's keys, its claims mapped to
// the user's username, email, name and groups here.
type UpstreamOIDC struct {
	// issuer of the upstream provider, exactly as its discovery document
	// (<issuer>/.well-known/openid-configuration) names it.
	Issuer URL `json:"issuer"`
	// clientID registered at the upstream provider.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	ClientID string `json:"clientID"`
	// clientSecretRef names the Secret key holding the client secret. The key
	// defaults to "client_secret".
	ClientSecretRef SecretKeyReference `json:"clientSecretRef"`
	// caSecretRef names a Secret key holding PEM CA certificates the provider's TLS
	// certificate is checked against, besides the system's roots: for a provider
	// behind a private CA. The key defaults to "ca.crt".
	// +optional
	CASecretRef *SecretKeyReference `json:"caSecretRef,omitempty"`
	// scopes requested from the upstream provider; openid is required. Add groups
	// (or what your provider calls it) when groups should come along.
	// +kubebuilder:default={openid,profile,email}
	// +listType=set
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:XValidation:rule="'openid' in self",message="scopes must include openid"
	// +optional
	Scopes []Scope `json:"scopes,omitempty"`
	// claims names the upstream claims that become the user's username, email, name
	// and groups here. Claims missing from the ID token are read from the provider's
	// userinfo endpoint.
	// +optional
	Claims *UpstreamClaims `json:"claims,omitempty"`
	// allowedGroups, when set, lets in only users of the upstream provider who are
	// in at least one of these groups (the provider's group names, matched exactly
	// and case-sensitively, without groupsPrefix); others are refused on a page
	// that says so. With neither allowedGroups nor allowedEmailDomains, EVERY
	// account the provider signs in may sign in here: with Google or another
	// provider open to anyone, anyone.
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=256
	// +kubebuilder:validation:items:Pattern=`^\S(.*\S)?$`
	// +optional
	AllowedGroups []string `json:"allowedGroups,omitempty"`
	// allowedEmailDomains, when set, lets in only users whose email (from the
	// provider, verified by it: email_verified true) is at one of these domains,
	// matched exactly (a subdomain is another domain), e.g. [corp.example] for
	// Google accounts of your Workspace. With allowedGroups too, a user must pass
	// both.
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=253
	// +kubebuilder:validation:items:Pattern=`^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	// +optional
	AllowedEmailDomains []string `json:"allowedEmailDomains,omitempty"`
	// usernamePrefix is put before every username (preferred_username) that comes
	// from the provider, e.g. "corp:", so that the provider's users can never take a
	// name your apps know for someone else (a users-file account, a kube-apiserver
	// or Grafana user). Whatever the prefix, an upstream username equal to a
	// users-file username is refused at sign-in.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +optional
	UsernamePrefix string `json:"usernamePrefix,omitempty"`
	// groupsPrefix is put before every group that comes from the provider, e.g.
	// "corp:", so that a group the provider's users can create ("admins") is never
	// one your apps' role mappings grant on. allowedGroups names the provider's
	// groups, without this prefix.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +optional
	GroupsPrefix string `json:"groupsPrefix,omitempty"`
	// fetchAllow lists internal address ranges (CIDRs) the token server may reach
	// the provider at, for a provider inside the cluster or a private network
	// (e.g. the Service CIDR of an in-cluster Keycloak or Dex). The issuer and
	// every URL its discovery document names (keys, token and userinfo endpoints)
	// are otherwise reached at public addresses only, as clients' jwks_uri are:
	// loopback, link-local (cloud metadata) and private addresses are refused.
	// +listType=set
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="must be a CIDR, e.g. 10.96.0.0/12"
	// +optional
	FetchAllow []string `json:"fetchAllow,omitempty"`
	// displayName labels the login page's button: "Sign in with <displayName>".
	// Unset: the issuer's host name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=64
	// +optional
	DisplayName string `json:"displayName,omitempty"`
}

// UpstreamClaims names upstream claims. Each defaults to the standard claim of the
// same meaning.
type UpstreamClaims struct {
	// username is the claim that becomes preferred_username; default
	// preferred_username. A user without it is named by their subject here. The subject
	// (sub) here is always "upstream:", a tag of the issuer, ":" and the
	// provider's sub: stable while the issuer is.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +optional
	Username string `json:"username,omitempty"`
	// email is the claim that becomes email; default email. email_verified is the
	// provider's only with the standard email claim: an address from another
	// claim is always unverified here.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +optional
	Email string `json:"email,omitempty"`
	// name is the claim that becomes name; default name.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +optional
	Name string `json:"name,omitempty"`
	// groups is the claim that becomes groups (a list of strings, or one string);
	// default groups.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +optional
	Groups string `json:"groups,omitempty"`
}

// ScopeDescription is the plain-words text for one scope on the consent page.
type ScopeDescription struct {
	// name of the scope.
	Name Scope `json:"name"`
	// description shown to the user, such as "Read your DNS zones".
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Description string `json:"description"`
}

// MetricsAccess limits who may read a bundled token server's metrics. Its /metrics is
// served on a port of its own, never through the Service clients use, but without
// authentication: what it tells (request and error rates, the sign-in throttle's
// state, the version) is for the platform's monitoring, not for every pod of the
// cluster.
type MetricsAccess struct {
	// from: the only peers, besides the operator's pods (which read a new version's
	// metrics during an upgrade), that the token server's NetworkPolicy admits to its
	// metrics port: typically your Prometheus's namespace and pods. Empty or unset:
	// every source, as the public port.
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	From []MetricsPeer `json:"from,omitempty"`
}

// MetricsPeer is a NetworkPolicy peer (networking.k8s.io/v1 NetworkPolicyPeer),
// written as in a NetworkPolicy and copied into the token server's. It is checked
// here as the API server checks a NetworkPolicy's, so that a peer it would refuse is
// refused at spec.metrics.from, not later at the operator's write of the
// NetworkPolicy; its selectors are bounded, so that the checks are cheap.
// +kubebuilder:validation:XValidation:rule="has(self.podSelector) || has(self.namespaceSelector) || has(self.ipBlock)",message="must name podSelector, namespaceSelector or ipBlock"
// +kubebuilder:validation:XValidation:rule="!has(self.ipBlock) || !(has(self.podSelector) || has(self.namespaceSelector))",message="ipBlock may not be combined with podSelector or namespaceSelector"
type MetricsPeer struct {
	// podSelector selects pods: in this namespace, or with namespaceSelector in the
	// namespaces it selects. An empty selector ({}) selects every pod.
	// +optional
	PodSelector *PeerSelector `json:"podSelector,omitempty"`
	// namespaceSelector selects namespaces: every pod of them, or with podSelector
	// the pods it selects. An empty selector ({}) selects every namespace.
	// +optional
	NamespaceSelector *PeerSelector `json:"namespaceSelector,omitempty"`
	// ipBlock admits an address range. Pod addresses are ephemeral: prefer selectors
	// for sources inside the cluster.
	// +optional
	IPBlock *PeerIPBlock `json:"ipBlock,omitempty"`
}

// PeerSelector is a label selector (metav1.LabelSelector) with bounds: of a
// MetricsPeer, a topology spread constraint or a pod affinity term.
type PeerSelector struct {
	// matchLabels: label keys and the values they must have.
	// +kubebuilder:validation:MaxProperties=16
	// +kubebuilder:validation:XValidation:rule="self.all(k, size(k) <= 317 && k.indexOf('/') <= 253 && k.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$'))",message="each key must be a label key: an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', beginning and ending with a letter or digit"
	// +optional
	MatchLabels map[string]LabelValue `json:"matchLabels,omitempty"`
	// matchExpressions: requirements on labels, all of which must hold.
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	MatchExpressions []PeerSelectorRequirement `json:"matchExpressions,omitempty"`
}

// PeerSelectorRequirement is a requirement of a PeerSelector
// (metav1.LabelSelectorRequirement).
// +kubebuilder:validation:XValidation:rule="self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0 : !has(self.values) || size(self.values) == 0",message="values must be set for In and NotIn and empty for Exists and DoesNotExist"
type PeerSelectorRequirement struct {
	// key is the label key.
	// +kubebuilder:validation:MinLength=1
	Key LabelKey `json:"key"`
	// operator: In, NotIn, Exists or DoesNotExist.
	// +kubebuilder:validation:Enum=In;NotIn;Exists;DoesNotExist
	Operator metav1.LabelSelectorOperator `json:"operator"`
	// values the label may (In) or may not (NotIn) have.
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	Values []LabelValue `json:"values,omitempty"`
}

// PeerIPBlock is an address range of a MetricsPeer (networking.k8s.io/v1 IPBlock).
// +kubebuilder:validation:XValidation:rule="!has(self.except) || !isCIDR(self.cidr) || self.except.all(e, !isCIDR(e) || (cidr(self.cidr).containsCIDR(e) && cidr(e).prefixLength() > cidr(self.cidr).prefixLength()))",fieldPath=".except",message="each entry must be a range strictly inside cidr"
type PeerIPBlock struct {
	// cidr: the range, e.g. 10.0.0.0/8 or 2001:db8::/64.
	// +kubebuilder:validation:MaxLength=43
	// +kubebuilder:validation:XValidation:rule="isCIDR(self)",message="must be a CIDR, e.g. 10.0.0.0/8"
	CIDR string `json:"cidr"`
	// except: ranges inside cidr that are not admitted.
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:MaxLength=43
	// +kubebuilder:validation:items:XValidation:rule="isCIDR(self)",message="must be a CIDR, e.g. 10.0.0.0/24"
	// +listType=atomic
	// +optional
	Except []string `json:"except,omitempty"`
}

// NamespacePolicy selects namespaces by label, as Gateway API's allowedRoutes does.
type NamespacePolicy struct {
	// selector of namespaces; an empty selector ({}) selects every namespace.
	Selector metav1.LabelSelector `json:"selector"`
}

// UpgradeSettings govern the blue-green upgrade that a change of image starts.
// docs/upgrades.md walks through the phases these settings shape.
type UpgradeSettings struct {
	// strategy of upgrades. BlueGreen is the only one.
	// +kubebuilder:validation:Enum=BlueGreen
	// +kubebuilder:default=BlueGreen
	// +optional
	Strategy string `json:"strategy,omitempty"`
	// dataMode: Shared (the new version uses the old database after expand
	// migrations, and traffic moves pod by pod), Copy (the new version gets a
	// migrated copy, every write the old one takes is replayed onto it, and traffic
	// moves at once at a fenced cutover), or Auto (the new image's migration plan
	// decides: Copy across a breaking migration, Shared otherwise). Shared with a
	// plan that needs a copy is refused before anything changes (Degraded, reason
	// UpgradeRefused); Copy with a plan that could share runs Copy anyway.
	// +kubebuilder:validation:Enum=Shared;Copy;Auto
	// +kubebuilder:default=Auto
	// +optional
	DataMode string `json:"dataMode,omitempty"`
	// verify the new version (issue, introspect, refresh and revoke a token through
	// it, and cross-check with the old one) before moving traffic.
	// +kubebuilder:default=true
	// +optional
	Verify *bool `json:"verify,omitempty"`
	// pauseBeforePromotion stops the upgrade after verification, before any traffic
	// moves, until the annotation oauth.kubeoauth.io/promote is set to the upgrade's
	// id (status.upgrade.id) or this field is set back to false.
	// +optional
	PauseBeforePromotion bool `json:"pauseBeforePromotion,omitempty"`
	// maxErrorRate of the new version during promotion, as a percentage such as
	// "1%" or "0.5%": an analysis check whose error rate (5xx responses over requests
	// since the step began, from the new version's own metrics) is above it fails.
	// analysis.failureThreshold failed checks roll the upgrade back.
	// +kubebuilder:default="1%"
	// +kubebuilder:validation:MaxLength=8
	// +kubebuilder:validation:XValidation:rule="self.matches('^(100|[0-9]{1,2}([.][0-9]{1,3})?)%$')",message="must be a percentage from 0% to 100%, such as 1% or 0.5%"
	// +optional
	MaxErrorRate string `json:"maxErrorRate,omitempty"`
	// analysis gates each promotion step on the new version's metrics.
	// +kubebuilder:default={}
	// +optional
	Analysis UpgradeAnalysis `json:"analysis,omitzero"`
	// progressDeadline: a phase before promotion completes (planning, migrating,
	// deploying, verifying, or one promotion step) that makes no progress for longer
	// rolls the upgrade back. A paused upgrade waits without a deadline.
	// +kubebuilder:default="10m"
	// +optional
	ProgressDeadline Duration `json:"progressDeadline,omitempty"`
	// scaleDownDelay: how long the old version keeps running, unserved, after the
	// last pod moved, so that requests and keep-alive connections in flight finish.
	// +kubebuilder:default="30s"
	// +optional
	ScaleDownDelay Duration `json:"scaleDownDelay,omitempty"`
	// rollbackWindow: after the old version is scaled to zero, how long it is kept
	// (its StatefulSet at zero replicas) and the contract migrations held back, so
	// that a rollback can still bring it back on an unchanged schema.
	// +kubebuilder:default="1h"
	// +optional
	RollbackWindow Duration `json:"rollbackWindow,omitempty"`
	// copy settings of an upgrade with a copied database (dataMode Copy, or Auto
	// across a breaking migration).
	// +kubebuilder:default={}
	// +optional
	Copy UpgradeCopySettings `json:"copy,omitzero"`
	// window restricts when an upgrade may start. An image change outside it waits
	// (Progressing, reason UpgradeWaitingForWindow, saying when it opens); an
	// upgrade that started inside it runs to its end, and rollbacks run at any time.
	// Unset: any time.
	// +optional
	Window *UpgradeWindow `json:"window,omitempty"`
}

// UpgradeCopySettings shape an upgrade with a copied database.
type UpgradeCopySettings struct {
	// targetSecretRef names the Secret key holding the DSN of the empty database the
	// copy goes into, for spec.database.external only (the key defaults to "dsn"). A
	// Copy upgrade of an external database without it is refused before anything
	// changes. A bundled database is copied into a second database of its own
	// PostgreSQL (kubeoauth_<upgrade id>), whose DSN the operator keeps in the Secret
	// <name>-<upgrade id>-db.
	// +optional
	TargetSecretRef *SecretKeyReference `json:"targetSecretRef,omitempty"`
	// fenceLease: how long the old version holds its write requests at the cutover
	// while the last changes are replayed. Should the cutover not finish within it,
	// the old version resumes by itself and the cutover is tried again. From 1s to 30s.
	// +kubebuilder:default="5s"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || (duration(self) >= duration('1s') && duration(self) <= duration('30s'))",message="must be from 1s to 30s: requests wait this long at most at the cutover"
	// +optional
	FenceLease Duration `json:"fenceLease,omitempty"`
}

// UpgradeAnalysis gates each promotion step on the new version's own metrics.
type UpgradeAnalysis struct {
	// interval between analysis checks of a promotion step. A step passes at its
	// first check with enough requests and an error rate within maxErrorRate, so a
	// step takes at least one interval.
	// +kubebuilder:default="30s"
	// +optional
	Interval Duration `json:"interval,omitempty"`
	// minRequestsPerStep the new version must have served since the step began for a
	// check to pass: too little traffic proves nothing, so the step waits (bounded
	// by progressDeadline). 0 lets a step pass without traffic, for a quiet server;
	// its metrics must still be readable.
	// +kubebuilder:default=20
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000000
	// +optional
	MinRequestsPerStep *int32 `json:"minRequestsPerStep,omitempty"`
	// failureThreshold: failed checks (an error rate above maxErrorRate, metrics
	// that cannot be read, counters that went back) over the whole promotion that
	// roll the upgrade back.
	// +kubebuilder:default=3
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100
	// +optional
	FailureThreshold int32 `json:"failureThreshold,omitempty"`
}

// UpgradeWindow is a daily time window in which upgrades may start.
type UpgradeWindow struct {
	// start of the window, as HH:MM on a 24-hour clock, such as "02:00".
	// +kubebuilder:validation:MaxLength=5
	// +kubebuilder:validation:XValidation:rule="self.matches('^([01][0-9]|2[0-3]):[0-5][0-9]$')",message="must be a time of day as HH:MM on a 24-hour clock, such as 02:00 or 23:30"
	Start string `json:"start"`
	// duration of the window, at most 24h, such as "2h".
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+$') || duration(self) <= duration('24h')",message="must be at most 24h: the window opens every day"
	Duration Duration `json:"duration"`
	// timeZone of start, an IANA name such as "Europe/Paris". Unset: UTC. A name the
	// operator does not know holds upgrades back with a condition that says so.
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.matches('^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$')",message="must be an IANA time zone name such as UTC or Europe/Paris"
	// +optional
	TimeZone string `json:"timeZone,omitempty"`
}

// ExternalTokenServer is a kubeoauth token server the operator does not run.
// +kubebuilder:validation:XValidation:rule="!isURL(self.adminURL) || url(self.adminURL).getScheme() != 'http' || (has(self.insecure) && self.insecure)",fieldPath=".adminURL",message="spec.external.adminURL is http: the admin bearer token would cross the network in clear text; use https, or set spec.external.insecure: true to accept that"
type ExternalTokenServer struct {
	// adminURL of the server's admin API, such as https://auth-admin.internal:4445.
	// An http URL needs insecure: true.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="isURL(self) && url(self).getScheme() in ['http', 'https'] && size(url(self).getHostname()) > 0",message="must be an absolute http or https URL, such as https://auth-admin.internal:4445"
	AdminURL string `json:"adminURL"`
	// tokenSecretRef names the Secret key holding the admin API's bearer token. The
	// key defaults to "token".
	TokenSecretRef SecretKeyReference `json:"tokenSecretRef"`
	// caSecretRef names the Secret key holding the PEM CA bundle the admin API's
	// certificate must chain to (the key defaults to "ca.crt"); without it, the
	// system's roots. Only the admin API's own CA is worth trusting here: the
	// operator sends it the admin token.
	// +optional
	CASecretRef *SecretKeyReference `json:"caSecretRef,omitempty"`
	// insecure allows an http adminURL: the admin bearer token, which can register,
	// change and delete any client, then travels unencrypted. Only for a server on
	// the same host or a network you trust; the TokenServer gets a Warning event
	// InsecureAdminURL and says so in its Ready condition.
	// +optional
	Insecure bool `json:"insecure,omitempty"`
	// ownsAllClients declares that this operator install is the only one registering
	// namespaced clients (clients with an owner namespace) on this server: no other
	// cluster, no other operator install and no administrator by hand. Only then does
	// the owner sweep delete the server's clients whose owner namespace this cluster
	// does not admit (orphaned clients, clients deleted during an outage). Without
	// it, such clients of de-admitted namespaces stay on the server until removed by
	// hand; an OAuthClient's own de-admission deregisters its client either way.
	// Bundled servers are always swept: the operator is their only registrar.
	// +optional
	OwnsAllClients bool `json:"ownsAllClients,omitempty"`
}

// TokenServerStatus is the observed state of a TokenServer.
type TokenServerStatus struct {
	// conditions: Ready, Progressing, Degraded; Reconciling while the operator is still at it, Stalled when only a person can move it on (see docs/operator.md#conditions).
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// observedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// activeColor is the StatefulSet (blue or green) that serves traffic, or served
	// it last before an upgrade began moving it.
	// +kubebuilder:validation:Enum=blue;green
	// +optional
	ActiveColor string `json:"activeColor,omitempty"`
	// currentImage is the image of the pods behind the public Service, as observed:
	// it never comes from the spec, so during a promotion it is still the old image
	// until no old pod serves.
	// +optional
	CurrentImage string `json:"currentImage,omitempty"`
	// targetImage is the image the operator is moving to.
	// +optional
	TargetImage string `json:"targetImage,omitempty"`
	// failedImage is an image whose upgrade was rolled back or refused. It is not
	// tried again until spec.image changes to another image or spec.upgrade
	// changes (the settings may have caused the failure).
	// +optional
	FailedImage string `json:"failedImage,omitempty"`
	// failedSettings is a digest of spec.upgrade when failedImage was recorded.
	// +kubebuilder:validation:MaxLength=64
	// +optional
	FailedSettings string `json:"failedSettings,omitempty"`
	// upgrade records an upgrade in progress or the last one, so a restarted
	// operator resumes where it stopped.
	// +optional
	Upgrade *UpgradeStatus `json:"upgrade,omitempty"`
	// issuer the server answers as.
	// +optional
	Issuer string `json:"issuer,omitempty"`
	// database names the Secret key holding the DSN the serving version uses, when
	// an upgrade with a copied database moved it off spec.database: every pod and Job
	// of the serving version, and the next upgrade, use it. Unset: spec.database's.
	// +optional
	Database *DatabaseRef `json:"database,omitempty"`
	// adminEndpoint the operator reaches the admin API at.
	// +optional
	AdminEndpoint string `json:"adminEndpoint,omitempty"`
	// readyReplicas of the serving StatefulSet.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
	// waiting is what the server waits for and since when without progress:
	// spec.progressDeadline counts from it. Kept in status so that a restarted
	// operator counts on; unset while nothing waits.
	// +optional
	Waiting *Wait `json:"waiting,omitempty"`
}

// Wait is a TokenServer's wait, as spec.progressDeadline measures it: for pods (its
// database's, its migrations Job's, its own; outside an upgrade), for a Secret it
// names, or for its admin API to answer.
type Wait struct {
	// reason of the wait, as the Reconciling condition had it: WaitingForDatabase,
	// Migrating, RollingOut, SecretMissing, InvalidSecret or AdminAPIUnreachable.
	// +kubebuilder:validation:MaxLength=64
	Reason string `json:"reason"`
	// object waited for, when the reason alone does not say which, such as
	// "Secret db key dsn": another one starts the count again.
	// +kubebuilder:validation:MaxLength=600
	// +optional
	Object string `json:"object,omitempty"`
	// readyReplicas of the object waited for when last seen: one more is progress.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas,omitempty"`
	// generation of the TokenServer the wait is for: a new one starts the count again.
	// +optional
	Generation int64 `json:"generation,omitempty"`
	// since is the last progress.
	Since metav1.Time `json:"since"`
}

// UpgradeStatus is the state of a blue-green upgrade: the operator's intent, written
// before it acts, so that a restarted operator resumes where it stopped.
type UpgradeStatus struct {
	// id of the upgrade. It names the upgrade's Jobs and is the value the promote and
	// rollback annotations must carry.
	// +kubebuilder:validation:MaxLength=16
	ID string `json:"id"`
	// phase of the upgrade: Planning, Migrating, Deploying, Verifying, Paused,
	// Promoting, ScalingDown, RollbackWindow, Contracting, Completed (Shared); Planning,
	// Copying, Deploying, Replaying, Paused, CuttingOver, ScalingDown, RollbackWindow,
	// Completed (Copy); RollingBack,
	// RolledBack; Refused (ended before anything changed); Failed (recorded by
	// earlier operators when the contract migrations failed; a failed contract is
	// now retried in Contracting).
	// +kubebuilder:validation:Enum=Planning;Migrating;Copying;Deploying;Replaying;Verifying;Paused;CuttingOver;Promoting;ScalingDown;RollbackWindow;Contracting;Completed;RollingBack;RolledBack;Refused;Failed
	Phase UpgradePhase `json:"phase"`
	// phaseSince is when the phase, or the promotion step, began; progressDeadline
	// counts from it.
	// +optional
	PhaseSince *metav1.Time `json:"phaseSince,omitempty"`
	// fromImage is the image that served when the upgrade began.
	// +optional
	FromImage string `json:"fromImage,omitempty"`
	// toImage is the image the upgrade moves to.
	// +optional
	ToImage string `json:"toImage,omitempty"`
	// fromColor is the StatefulSet that served when the upgrade began.
	// +kubebuilder:validation:Enum=blue;green
	// +optional
	FromColor string `json:"fromColor,omitempty"`
	// toColor is the StatefulSet the new image runs in.
	// +kubebuilder:validation:Enum=blue;green
	// +optional
	ToColor string `json:"toColor,omitempty"`
	// step of the promotion, from 1 to steps: the new version's first `step` pods
	// carry the serving label, and the step's analysis decides whether one more does.
	// +optional
	Step int32 `json:"step,omitempty"`
	// steps of the promotion: the replicas when the upgrade began; both colors run
	// that many pods until it ends.
	// +optional
	Steps int32 `json:"steps,omitempty"`
	// progress for kubectl get: the steps that passed their analysis, such as "2/3".
	// +optional
	Progress string `json:"progress,omitempty"`
	// plan the new image's migration plan reported.
	// +optional
	Plan *UpgradePlan `json:"plan,omitempty"`
	// analysis figures of the current promotion step.
	// +optional
	Analysis *UpgradeAnalysisStatus `json:"analysis,omitempty"`
	// copy is the state of an upgrade with a copied database.
	// +optional
	Copy *UpgradeCopyStatus `json:"copy,omitempty"`
	// reason of the phase in one CamelCase word, such as VerificationFailed,
	// AnalysisFailed, ProgressDeadlineExceeded, RollbackRequested or MigrationFailed.
	// +optional
	Reason string `json:"reason,omitempty"`
	// message explains the phase.
	// +optional
	Message string `json:"message,omitempty"`
	// rollbackReason says why the upgrade is rolling or was rolled back.
	// +optional
	RollbackReason string `json:"rollbackReason,omitempty"`
	// contractRetries counts the contract Jobs that failed and were started again:
	// the Job of retry n is named <server>-<id>-contract-<n>.
	// +optional
	ContractRetries int32 `json:"contractRetries,omitempty"`
	// nextRetry is when a failed contract Job is started again.
	// +optional
	NextRetry *metav1.Time `json:"nextRetry,omitempty"`
	// startedAt is when the upgrade started.
	// +optional
	StartedAt *metav1.Time `json:"startedAt,omitempty"`
	// completedAt is when the upgrade ended: completed, rolled back, refused or failed.
	// +optional
	CompletedAt *metav1.Time `json:"completedAt,omitempty"`
}

// UpgradePhase is a phase of a blue-green upgrade.
type UpgradePhase string

// Phases of an upgrade, in order; RollingBack, RolledBack, Refused and Failed leave
// the order.
const (
	UpgradePlanning       UpgradePhase = "Planning"
	UpgradeMigrating      UpgradePhase = "Migrating"
	UpgradeCopying        UpgradePhase = "Copying"
	UpgradeDeploying      UpgradePhase = "Deploying"
	UpgradeReplaying      UpgradePhase = "Replaying"
	UpgradeVerifying      UpgradePhase = "Verifying"
	UpgradePaused         UpgradePhase = "Paused"
	UpgradeCuttingOver    UpgradePhase = "CuttingOver"
	UpgradePromoting      UpgradePhase = "Promoting"
	UpgradeScalingDown    UpgradePhase = "ScalingDown"
	UpgradeRollbackWindow UpgradePhase = "RollbackWindow"
	UpgradeContracting    UpgradePhase = "Contracting"
	UpgradeCompleted      UpgradePhase = "Completed"
	UpgradeRollingBack    UpgradePhase = "RollingBack"
	UpgradeRolledBack     UpgradePhase = "RolledBack"
	UpgradeRefused        UpgradePhase = "Refused"
	UpgradeFailed         UpgradePhase = "Failed"
)

// DatabaseRef names the Secret key holding a database's DSN.
type DatabaseRef struct {
	// secretName of the Secret.
	// +kubebuilder:validation:MaxLength=253
	SecretName string `json:"secretName"`
	// key in the Secret's data.
	// +kubebuilder:validation:MaxLength=253
	Key string `json:"key"`
}

// UpgradeCopyStatus is the state of an upgrade with a copied database: the copy,
// the replay of the old version's writes onto it, and the cutover.
type UpgradeCopyStatus struct {
	// database is the copy: the new version's database.
	Database DatabaseRef `json:"database"`
	// source is status.database when the upgrade began, the old version's database
	// (unset: spec.database's): a rollback after the cutover brings the old version
	// back on it.
	// +optional
	Source *DatabaseRef `json:"source,omitempty"`
	// rowsCopied by the copy Job.
	// +optional
	RowsCopied int64 `json:"rowsCopied,omitempty"`
	// replayPending: the changes the serving version took that the replay has not
	// applied to the other database yet, as the replay last reported: before the
	// cutover the forward replay's (the old version's writes onto the copy), after
	// it the backward replay's (the new version's onto the old database, which a
	// rollback needs).
	// +optional
	ReplayPending int64 `json:"replayPending,omitempty"`
	// replayLagSeconds: the age of the oldest of them, in seconds, such as "0.4".
	// +kubebuilder:validation:MaxLength=16
	// +optional
	ReplayLagSeconds string `json:"replayLagSeconds,omitempty"`
	// fenceHoldSeconds: how long the cutover (or the cut back) held write requests,
	// in seconds, such as "0.84".
	// +kubebuilder:validation:MaxLength=16
	// +optional
	FenceHoldSeconds string `json:"fenceHoldSeconds,omitempty"`
	// cutoverAt is when the copy became the database of the new version, which
	// then took all traffic: the point of no return of a rollback without a cut back.
	// +optional
	CutoverAt *metav1.Time `json:"cutoverAt,omitempty"`
	// cutoverRetries counts the cutover (or cut back) Jobs that failed and were
	// started again: the Job of retry n is named <server>-<id>-cutover-<n>.
	// +optional
	CutoverRetries int32 `json:"cutoverRetries,omitempty"`
	// cutBack: a rollback after the cutover moved the database back to source,
	// replaying the new version's writes onto it.
	// +optional
	CutBack bool `json:"cutBack,omitempty"`
	// cleanup is the state of the Job `<server>-<id>-cleanup` that runs `tokenserver
	// db cleanup` once the upgrade ended: Running, Done, or "Failed: " and why. A
	// failed cleanup fails nothing else; deleting its Job runs it again.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Cleanup string `json:"cleanup,omitempty"`
}

// UpgradePlan is what the new image's `migrate plan` reported.
type UpgradePlan struct {
	// schemaFrom is the schema version of the database when the upgrade began.
	// +optional
	SchemaFrom int64 `json:"schemaFrom,omitempty"`
	// schemaTo is the schema version the new image needs.
	// +optional
	SchemaTo int64 `json:"schemaTo,omitempty"`
	// mode the plan needs: Shared (expand migrations only: both versions run on one
	// schema), Copy (a breaking migration: a copied database) or Refused (the new
	// image cannot upgrade from this schema).
	// +kubebuilder:validation:Enum=Shared;Copy;Refused
	// +optional
	Mode string `json:"mode,omitempty"`
	// reason the plan gives for its mode, such as the migrations that decide it.
	// +kubebuilder:validation:MaxLength=1024
	// +optional
	Reason string `json:"reason,omitempty"`
}

// UpgradeAnalysisStatus holds the figures of the current promotion step, measured
// from the new version's own cumulative counters against the baseline taken when
// the step began.
type UpgradeAnalysisStatus struct {
	// requests the new version served since the step began, on the endpoints the
	// analysis judges; answers the caller caused (4xx) are not counted.
	// +optional
	Requests int64 `json:"requests,omitempty"`
	// errors (5xx responses) among them.
	// +optional
	Errors int64 `json:"errors,omitempty"`
	// rate of errors of the endpoint that fares worst, as a percentage such as "0.25%".
	// +optional
	Rate string `json:"rate,omitempty"`
	// failedChecks over the whole promotion; analysis.failureThreshold of them roll
	// the upgrade back.
	// +optional
	FailedChecks int32 `json:"failedChecks,omitempty"`
	// endpoints are the figures of each endpoint the analysis judges (the public
	// OAuth endpoints: token, introspect, revoke, authorize, userinfo, the login
	// pages; never the admin API, discovery or jwks) since the step began. A check
	// fails when any one of them is over maxErrorRate.
	// +listType=map
	// +listMapKey=endpoint
	// +kubebuilder:validation:MaxItems=32
	// +optional
	Endpoints []UpgradeEndpointCounts `json:"endpoints,omitempty"`
	// baseline is the new version's counters, per endpoint, when the step began:
	// kept in status so that a restarted operator counts from the same point.
	// +listType=map
	// +listMapKey=endpoint
	// +kubebuilder:validation:MaxItems=32
	// +optional
	Baseline []UpgradeEndpointCounts `json:"baseline,omitempty"`
	// lastCheck is when the last check ran, or the step began.
	// +optional
	LastCheck *metav1.Time `json:"lastCheck,omitempty"`
}

// UpgradeEndpointCounts are the counters of one endpoint: requests answered, the
// caller's own errors (4xx) left out, and those answered with a 5xx.
type UpgradeEndpointCounts struct {
	// endpoint as the token server's metrics name it, such as token or introspect.
	// +kubebuilder:validation:MaxLength=64
	Endpoint string `json:"endpoint"`
	// requests answered with a code below 400 or a 5xx.
	// +optional
	Requests int64 `json:"requests,omitempty"`
	// errors answered with a 5xx.
	// +optional
	Errors int64 `json:"errors,omitempty"`
}

// TokenServer is one OAuth 2.0 / OpenID Connect authorization server: bundled and run by
// the operator, or run elsewhere (spec.external).
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=ts,categories=kubeoauth;oauth
// +kubebuilder:validation:XValidation:rule="!['-blue', '-green', '-db', '-keys', '-admin', '-admin-tls', '-config', '-pages', '-tokenserver'].exists(s, self.metadata.name.endsWith(s))",fieldPath=".metadata",message="metadata.name must not end in -blue, -green, -db, -keys, -admin, -admin-tls, -config, -pages or -tokenserver: the TokenServer named without that suffix names its own objects so, and the two would collide in one namespace"
// +kubebuilder:validation:XValidation:rule=`has(self.spec.external) || self.metadata.name.matches(r'^[a-z]([-a-z0-9]*[a-z0-9])?$')`,fieldPath=".metadata",message="metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', beginning with a letter and ending with a letter or digit): a bundled TokenServer's Service is named metadata.name, and a Service name cannot hold a dot or begin with a digit"
// +kubebuilder:validation:XValidation:rule="has(self.spec.external) || size(self.metadata.name) <= 46",fieldPath=".metadata",message="metadata.name must be at most 46 characters for a bundled TokenServer: the first install's migration Job is <metadata.name>-migrate-<8 hex digits>, which its pods carry as their job-name label, a label value of at most 63 characters"
// +kubebuilder:validation:XValidation:rule="!has(self.spec.branding) || !has(self.spec.branding.templatesConfigMapRef) || !(self.spec.branding.templatesConfigMapRef.name in [self.metadata.name + '-pages', self.metadata.name + '-config'])",fieldPath=".spec.branding.templatesConfigMapRef.name",message="spec.branding.templatesConfigMapRef.name must not be <metadata.name>-pages or <metadata.name>-config: the operator writes those ConfigMaps itself (-pages is its checked copy of the templates, which the pods mount); name the ConfigMap of your templates otherwise, such as <metadata.name>-templates"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Status",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Issuer",type=string,JSONPath=`.spec.issuer`
// +kubebuilder:printcolumn:name="Serving",type=string,JSONPath=`.status.currentImage`
// +kubebuilder:printcolumn:name="Desired",type=string,JSONPath=`.spec.image`,priority=1
// +kubebuilder:printcolumn:name="Active",type=string,JSONPath=`.status.activeColor`
// +kubebuilder:printcolumn:name="Upgrade",type=string,JSONPath=`.status.upgrade.phase`
// +kubebuilder:printcolumn:name="Step",type=string,JSONPath=`.status.upgrade.progress`,priority=1
// +kubebuilder:printcolumn:name="Target",type=string,JSONPath=`.status.upgrade.toImage`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type TokenServer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   TokenServerSpec   `json:"spec"`
	Status TokenServerStatus `json:"status,omitzero"`
}

// TokenServerList is a list of TokenServers.
//
// +kubebuilder:object:root=true
type TokenServerList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TokenServer `json:"items"`
}
