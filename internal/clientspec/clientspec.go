// Package clientspec turns OAuthClient resources into what the token server is told:
// the stable client ID, whether the client's namespace may register on the server and
// may skip consent, the admin API body, and the credentials Secret's data. Everything
// here is pure, so the reconciler's decisions are table-tested without an API server.
package clientspec

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/adminapi"
)

// Keys of the credentials Secret.
const (
	KeyClientID     = "client_id"
	KeyClientSecret = "client_secret"
	KeyIssuer       = "issuer"
	KeyTokenURL     = "token_url"
)

// Server is the TokenServer an OAuthClient names; serverRef.namespace defaults to the
// client's own.
func Server(oc *oauthv1alpha1.OAuthClient) types.NamespacedName {
	ns := oc.Spec.ServerRef.Namespace
	if ns == "" {
		ns = oc.Namespace
	}
	return types.NamespacedName{Namespace: ns, Name: oc.Spec.ServerRef.Name}
}

// ClientID is spec.clientID when set, otherwise derived from the server and the
// resource's namespace and name alone, so that deleting everything and re-applying it
// from git yields the same ID: "<namespace>-<name>-<8 hex of a hash>", the hash
// telling apart names that the dashes would make equal.
func ClientID(oc *oauthv1alpha1.OAuthClient) string {
	if oc.Spec.ClientID != "" {
		return oc.Spec.ClientID
	}
	server := Server(oc)
	sum := sha256.Sum256([]byte(strings.Join([]string{server.Namespace, server.Name, oc.Namespace, oc.Name}, "/")))
	return fmt.Sprintf("%s-%s-%s", oc.Namespace, oc.Name, hex.EncodeToString(sum[:4]))
}

// CustomIDSeparator ends the namespace in a custom client ID: "<namespace>_<suffix>".
// Neither a namespace name (a DNS label) nor an OAuthClient name (a DNS subdomain)
// can hold a '_', so the namespace is everything before the first one: two
// namespaces' ranges never overlap, and no derived ID ("<namespace>-<name>-<hash>",
// which never holds one) is ever in a custom range. '_' is unreserved in URLs, so the
// ID stays a plain path segment, HTTP Basic user name and Secret value.
const CustomIDSeparator = "_"

// derivedShape matches what ClientID derives: DNS characters, ending in -<8 hex>.
var derivedShape = regexp.MustCompile(`^[a-z0-9.-]+-[0-9a-f]{8}$`)

// ClientIDAllowed says whether oc may register its spec.clientID on server, and if not,
// why. A custom ID is "<namespace>_<suffix>" (see CustomIDSeparator), so that a
// namespace can only pick IDs in its own range and never another team's, derived or
// custom, by accident or on purpose. Only the server's own namespace (the platform
// team that runs it) may pick other IDs, such as a legacy "grafana" — but not one in a
// tenant's range nor one shaped like a derived ID, which a tenant's OAuthClient would
// otherwise find taken. The token server's owner check (409 on another namespace's
// ID) still stands behind this, for IDs registered before the rule (the "<namespace>-"
// prefix of earlier versions, whose ranges could overlap), which keep working.
func ClientIDAllowed(oc *oauthv1alpha1.OAuthClient, server *oauthv1alpha1.TokenServer) (bool, string) {
	id := oc.Spec.ClientID
	own := oc.Namespace + CustomIDSeparator
	if id == "" || (strings.HasPrefix(id, own) && len(id) > len(own)) {
		return true, ""
	}
	if oc.Namespace == server.Namespace {
		if prefix, _, ok := strings.Cut(id, CustomIDSeparator); ok {
			return false, fmt.Sprintf("spec.clientID %q is in namespace %q's range (%q): a client of %s may choose any "+
				"ID except one in a tenant's range or shaped like a derived ID", id, prefix, prefix+CustomIDSeparator, server.Namespace)
		}
		if derivedShape.MatchString(id) {
			return false, fmt.Sprintf("spec.clientID %q has the shape of a derived ID (<namespace>-<name>-<8 hex>), which "+
				"a tenant's OAuthClient would find taken: use %q or an ID without that ending", id, own+"…")
		}
		return true, ""
	}
	return false, fmt.Sprintf("spec.clientID %q must start with %q and go on after it: a custom client ID on TokenServer "+
		"%s/%s is \"<namespace>_<suffix>\", so that no namespace can claim another's (only clients in %s may choose other IDs)",
		id, own, server.Namespace, server.Name, server.Namespace)
}

// Admitted says whether a client in namespace ns may register on server: the
// server's own namespace always may; spec.clientNamespaces widens that. A selector
// that does not match the platform's own namespace must not de-admit (and so delete)
// the platform's own clients.
func Admitted(server *oauthv1alpha1.TokenServer, ns *corev1.Namespace) (bool, error) {
	if ns.Name == server.Namespace {
		return true, nil
	}
	if server.Spec.ClientNamespaces == nil {
		return false, nil
	}
	return selects(&server.Spec.ClientNamespaces.Selector, ns)
}

// FirstParty says whether clients in ns may skip consent on server
// (spec.firstPartyNamespaces; nobody by default).
func FirstParty(server *oauthv1alpha1.TokenServer, ns *corev1.Namespace) (bool, error) {
	if server.Spec.FirstPartyNamespaces == nil {
		return false, nil
	}
	return selects(&server.Spec.FirstPartyNamespaces.Selector, ns)
}

func selects(sel *metav1.LabelSelector, ns *corev1.Namespace) (bool, error) {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return false, err
	}
	return s.Matches(labels.Set(ns.Labels)), nil
}

// Credentials are the secrets the token server accepts for a client.
type Credentials struct {
	Secret         string
	PreviousSecret string
	// PreviousUntil is when PreviousSecret stops working (RFC 3339), with it.
	PreviousUntil *metav1.Time
}

// Desired is the admin API body for oc: every spec field, the namespace as verified
// owner, skipConsent only when firstParty.
func Desired(oc *oauthv1alpha1.OAuthClient, clientID string, creds Credentials, firstParty bool) *adminapi.Client {
	s := oc.Spec
	c := &adminapi.Client{ID: clientID, OwnerNamespace: oc.Namespace, ClientMetadata: adminapi.ClientMetadata{
		Name: s.ClientName, LogoURI: string(s.LogoURI), ClientURI: string(s.ClientURI), PolicyURI: string(s.PolicyURI),
		TOSURI: string(s.TosURI), GrantTypes: GrantTypes(oc, firstParty), ResponseTypes: strs(s.ResponseTypes),
		RedirectURIs: strs(s.RedirectURIs), PostLogoutRedirectURIs: strs(s.PostLogoutRedirectURIs), Scopes: strs(s.Scopes),
		Audience: s.Audience, TokenEndpointAuthMethod: string(s.TokenEndpointAuthMethod), JWKSURI: string(s.JWKSURI),
		SkipConsent: s.SkipConsent && firstParty,
	}}
	if c.TokenEndpointAuthMethod == "" {
		c.TokenEndpointAuthMethod = "client_secret_basic"
	}
	if s.Owner != nil {
		c.OwnerTeam, c.OwnerContact = s.Owner.Team, s.Owner.Contact
	}
	if s.JWKS != nil {
		c.JWKS, _ = json.Marshal(s.JWKS)
	}
	if s.JWTBearer != nil && firstParty {
		c.JWTBearer = jwtBearer(s.JWTBearer)
	}
	if l := s.TokenLifespans; l != nil {
		c.TokenLifespans = map[string]string{}
		for k, v := range map[string]oauthv1alpha1.Duration{"accessToken": l.AccessToken, "refreshToken": l.RefreshToken,
			"idToken": l.IDToken, "authorizationCode": l.AuthorizationCode} {
			if v != "" {
				c.TokenLifespans[k] = string(v)
			}
		}
	}
	if c.TokenEndpointAuthMethod != adminapi.AuthNone && c.TokenEndpointAuthMethod != adminapi.AuthPrivateKeyJWT {
		c.Secret = creds.Secret
		if creds.PreviousSecret != "" && creds.PreviousUntil != nil {
			c.PreviousSecret = creds.PreviousSecret
			t := creds.PreviousUntil.UTC()
			c.PreviousSecretExpiresAt = &t
		}
	}
	return c
}

// GrantTypes are the grants oc is registered with: its spec's (authorization_code
// when unset), without jwt-bearer outside the first-party namespaces. That grant's
// tokens name a subject no user consented for, so it takes the same trust as
// skipping consent, and like skipConsent it is dropped, not refused, when a namespace
// loses the first-party label: the token server must stop honouring it at once. None
// left: the client cannot be registered (see the OAuthClient controller).
func GrantTypes(oc *oauthv1alpha1.OAuthClient, firstParty bool) []string {
	g := strs(oc.Spec.GrantTypes)
	if len(g) == 0 {
		return []string{string(oauthv1alpha1.GrantAuthorizationCode)}
	}
	if !firstParty {
		g = slices.DeleteFunc(g, func(s string) bool { return s == string(oauthv1alpha1.GrantJWTBearer) })
	}
	return g
}

// NeedsSecret says whether the client authenticates with a client secret.
func NeedsSecret(oc *oauthv1alpha1.OAuthClient) bool {
	m := oc.Spec.TokenEndpointAuthMethod
	return m != oauthv1alpha1.AuthNone && m != oauthv1alpha1.AuthPrivateKeyJWT
}

// SecretName is spec.secret.name or "<name>-oauth".
func SecretName(oc *oauthv1alpha1.OAuthClient) string {
	if oc.Spec.Secret.Name != "" {
		return oc.Spec.Secret.Name
	}
	return oc.Name + "-oauth"
}

// CreatesSecret says whether the operator generates the credentials (the default) or
// waits for a Secret someone else fills.
func CreatesSecret(oc *oauthv1alpha1.OAuthClient) bool {
	return oc.Spec.Secret.Create == nil || *oc.Spec.Secret.Create
}

// SecretData is the generated credentials Secret's content.
func SecretData(clientID, secret, issuer string) map[string][]byte {
	return map[string][]byte{
		KeyClientID: []byte(clientID), KeyClientSecret: []byte(secret),
		KeyIssuer: []byte(issuer), KeyTokenURL: []byte(strings.TrimSuffix(issuer, "/") + "/oauth2/token"),
	}
}

func strs[T ~string](in []T) []string {
	if in == nil {
		return nil
	}
	out := make([]string, len(in))
	for i, v := range in {
		out[i] = string(v)
	}
	return out
}

// Keys of a rotation in progress, in the generated Secret.
const (
	KeyPreviousClientSecret = "previous_client_secret"
	// AnnotationPreviousUntil is when the previous secret stops working (RFC 3339).
	AnnotationPreviousUntil = "oauth.kubeoauth.io/previous-secret-expires-at"
	// AnnotationRotatedAt is when the secret was last rotated (RFC 3339).
	AnnotationRotatedAt = "oauth.kubeoauth.io/rotated-at"
)

// RotationPlan is what a pass does about secret rotation.
type RotationPlan struct {
	// Rotate: make a new secret now, keeping the current one as previous.
	Rotate bool
	// DropPrevious: the overlap is over; forget the previous secret.
	DropPrevious bool
	// Next is when to look again (zero: nothing scheduled).
	Next time.Duration
}

// PlanRotation decides, for a generated secret last rotated at rotatedAt (or created
// then), with a previous secret valid until previousUntil (zero when none), what to do
// at now under spec.secret.rotation. It is pure, for table tests with a fake clock.
func PlanRotation(rot *oauthv1alpha1.SecretRotation, rotatedAt, previousUntil, now time.Time) (RotationPlan, error) {
	var p RotationPlan
	if !previousUntil.IsZero() {
		if !now.Before(previousUntil) {
			p.DropPrevious = true
		} else {
			p.Next = previousUntil.Sub(now)
		}
	}
	if rot == nil {
		return p, nil
	}
	every, err := rot.Every.Parse()
	if err != nil {
		return p, fmt.Errorf("spec.secret.rotation.every: %w", err)
	}
	due := rotatedAt.Add(every)
	if !now.Before(due) {
		p.Rotate, p.DropPrevious = true, false
		p.Next = every
		return p, nil
	}
	if wait := due.Sub(now); p.Next == 0 || wait < p.Next {
		p.Next = wait
	}
	return p, nil
}

// Overlap is how long a replaced secret keeps working (default 24h).
func Overlap(rot *oauthv1alpha1.SecretRotation) (time.Duration, error) {
	if rot == nil || rot.Overlap == "" {
		return 24 * time.Hour, nil
	}
	d, err := rot.Overlap.Parse()
	if err != nil {
		return 0, fmt.Errorf("spec.secret.rotation.overlap: %w", err)
	}
	return d, nil
}

// jwtBearer is spec.jwtBearer as the admin API takes it.
func jwtBearer(j *oauthv1alpha1.JWTBearer) json.RawMessage {
	out := adminapi.JWTBearer{TrustedIssuers: make([]adminapi.TrustedJWTIssuer, 0, len(j.TrustedIssuers))}
	for _, t := range j.TrustedIssuers {
		ti := adminapi.TrustedJWTIssuer{Issuer: t.Issuer, JWKSURI: string(t.JWKSURI), Subjects: t.Subjects,
			AllowAnySubject: t.AllowAnySubject, Scopes: strs(t.Scopes)}
		if t.JWKS != nil {
			ti.JWKS, _ = json.Marshal(t.JWKS)
		}
		out.TrustedIssuers = append(out.TrustedIssuers, ti)
	}
	b, _ := json.Marshal(out)
	return b
}
