package clientspec

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

func client(ns, name string, mutate ...func(*oauthv1alpha1.OAuthClient)) *oauthv1alpha1.OAuthClient {
	oc := &oauthv1alpha1.OAuthClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: oauthv1alpha1.OAuthClientSpec{ServerRef: oauthv1alpha1.ServerReference{Name: "auth", Namespace: "platform"},
			ClientName: "Grafana"}}
	for _, m := range mutate {
		m(oc)
	}
	return oc
}

func TestClientID(t *testing.T) {
	tests := map[string]struct {
		a, b      *oauthv1alpha1.OAuthClient
		wantEqual bool
	}{
		"same resource, recreated": {client("obs", "grafana"), client("obs", "grafana"), true},
		"other name":               {client("obs", "grafana"), client("obs", "loki"), false},
		"dashes cannot collide":    {client("a-b", "c"), client("a", "b-c"), false},
		"other server": {client("obs", "grafana"), client("obs", "grafana", func(oc *oauthv1alpha1.OAuthClient) {
			oc.Spec.ServerRef.Name = "auth2"
		}), false},
		"serverRef namespace defaults to the client's": {
			client("platform", "x", func(oc *oauthv1alpha1.OAuthClient) { oc.Spec.ServerRef.Namespace = "" }),
			client("platform", "x"), true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if got := ClientID(tt.a) == ClientID(tt.b); got != tt.wantEqual {
				t.Errorf("ClientID(a)=%s ClientID(b)=%s; equal=%v, want %v", ClientID(tt.a), ClientID(tt.b), got, tt.wantEqual)
			}
		})
	}
	set := client("obs", "grafana", func(oc *oauthv1alpha1.OAuthClient) { oc.Spec.ClientID = "legacy-id" })
	if ClientID(set) != "legacy-id" {
		t.Errorf("spec.clientID ignored: %s", ClientID(set))
	}
	if id := ClientID(client("obs", "grafana")); id[:12] != "obs-grafana-" || len(id) != 20 {
		t.Errorf("derived ID %q: want obs-grafana-<8 hex>", id)
	}
}

func TestClientIDAllowed(t *testing.T) {
	server := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: "platform", Name: "auth"}}
	custom := func(id string) func(*oauthv1alpha1.OAuthClient) {
		return func(oc *oauthv1alpha1.OAuthClient) { oc.Spec.ClientID = id }
	}
	tests := map[string]struct {
		oc   *oauthv1alpha1.OAuthClient
		want bool
	}{
		"derived ID":                              {client("tenant-a", "web"), true},
		"custom ID in the namespace's range":      {client("tenant-a", "web", custom("tenant-a_web")), true},
		"the old dash prefix":                     {client("tenant-a", "web", custom("tenant-a-web")), false},
		"another namespace's ID":                  {client("tenant-x", "web", custom("tenant-a_web")), false},
		"a bare legacy ID from a tenant":          {client("tenant-x", "web", custom("grafana")), false},
		"the namespace alone is not its range":    {client("tenant-a", "web", custom("tenant-a_")), false},
		"the server's own namespace picks any":    {client("platform", "grafana", custom("grafana")), true},
		"the server's namespace in its range":     {client("platform", "grafana", custom("platform_grafana")), true},
		"a namespace named like the server's":     {client("platform2", "grafana", custom("grafana")), false},
		"the server's namespace in a tenant's":    {client("platform", "web", custom("tenant-a_web")), false},
		"the server's namespace, derived shape":   {client("platform", "web", custom("tenant-a-web-b87de209")), false},
		"a longer namespace's derived ID (squat)": {client("sq", "web", custom("sq-pay-web-b87de209")), false},
		"a shorter namespace's range":             {client("sq-pay", "web", custom("sq_pay-web")), false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			ok, msg := ClientIDAllowed(tt.oc, server)
			if ok != tt.want || (!ok && !strings.Contains(msg, "spec.clientID")) {
				t.Errorf("ClientIDAllowed = %v, %q; want %v with a message naming spec.clientID", ok, msg, tt.want)
			}
			if !ok && tt.oc.Namespace != server.Namespace && !strings.Contains(msg, `"`+tt.oc.Namespace+`_"`) {
				t.Errorf("message %q does not name the allowed prefix", msg)
			}
		})
	}
}

// No custom ID a namespace may choose is another namespace's derived ID or custom ID:
// the squat of the review (a namespace whose name is a prefix of another's) included.
func TestCustomIDsNeverCollide(t *testing.T) {
	server := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: "platform", Name: "auth"}}
	namespaces := []string{"sq", "sq-pay", "sq-pay-web", "a", "a-b", "platform"}
	names := []string{"web", "pay-web", "b.c", "c"}
	ids := map[string]string{} // ID -> who may hold it
	for _, ns := range namespaces {
		for _, name := range names {
			ids[ClientID(client(ns, name))] = ns + " derived"
		}
	}
	for _, ns := range namespaces {
		for _, id := range []string{"sq-pay-web-00000000", ClientID(client("sq-pay", "web")), ClientID(client("a-b", "c")),
			ClientID(client("a", "b.c")), "sq-pay_web", "sq_pay-web", "a_b", "a-b_c"} {
			oc := client(ns, "x", func(oc *oauthv1alpha1.OAuthClient) { oc.Spec.ClientID = id })
			ok, _ := ClientIDAllowed(oc, server)
			if !ok {
				continue
			}
			if holder, taken := ids[id]; taken && holder != ns+" derived" {
				t.Errorf("namespace %s may choose %q, which is %s", ns, id, holder)
			}
			if prefix, _, _ := strings.Cut(id, CustomIDSeparator); ns != server.Namespace && prefix != ns {
				t.Errorf("namespace %s may choose %q in namespace %s's range", ns, id, prefix)
			}
		}
	}
}

func TestNamespacePolicy(t *testing.T) {
	ns := func(name string, labels map[string]string) *corev1.Namespace {
		return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	}
	selector := func(key, value string) *oauthv1alpha1.NamespacePolicy {
		return &oauthv1alpha1.NamespacePolicy{Selector: metav1.LabelSelector{MatchLabels: map[string]string{key: value}}}
	}
	server := func(clients, firstParty *oauthv1alpha1.NamespacePolicy) *oauthv1alpha1.TokenServer {
		return &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: "platform", Name: "auth"},
			Spec: oauthv1alpha1.TokenServerSpec{ClientNamespaces: clients, FirstPartyNamespaces: firstParty}}
	}
	tests := map[string]struct {
		server                  *oauthv1alpha1.TokenServer
		ns                      *corev1.Namespace
		admitted, firstPartyNow bool
	}{
		"default: own namespace only":      {server(nil, nil), ns("platform", nil), true, false},
		"default: others refused":          {server(nil, nil), ns("obs", nil), false, false},
		"selector admits a labelled one":   {server(selector("clients", "allowed"), nil), ns("obs", map[string]string{"clients": "allowed"}), true, false},
		"selector refuses an unlabelled":   {server(selector("clients", "allowed"), nil), ns("obs", nil), false, false},
		"empty selector admits all":        {server(&oauthv1alpha1.NamespacePolicy{}, nil), ns("any", nil), true, false},
		"selector keeps the own namespace": {server(selector("clients", "allowed"), nil), ns("platform", nil), true, false},
		"first party by label":             {server(nil, selector("fp", "true")), ns("platform", map[string]string{"fp": "true"}), true, true},
		"first party needs the label too":  {server(nil, selector("fp", "true")), ns("platform", nil), true, false},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			admitted, err := Admitted(tt.server, tt.ns)
			if err != nil || admitted != tt.admitted {
				t.Errorf("Admitted = %v, %v; want %v", admitted, err, tt.admitted)
			}
			fp, err := FirstParty(tt.server, tt.ns)
			if err != nil || fp != tt.firstPartyNow {
				t.Errorf("FirstParty = %v, %v; want %v", fp, err, tt.firstPartyNow)
			}
		})
	}
}

func TestDesired(t *testing.T) {
	oc := client("obs", "grafana", func(oc *oauthv1alpha1.OAuthClient) {
		oc.Spec.Owner = &oauthv1alpha1.Owner{Team: "observability", Contact: "obs@example.com"}
		oc.Spec.GrantTypes = []oauthv1alpha1.GrantType{"authorization_code", "refresh_token"}
		oc.Spec.RedirectURIs = []oauthv1alpha1.URL{"https://grafana.example.com/cb"}
		oc.Spec.PostLogoutRedirectURIs = []oauthv1alpha1.URL{"https://grafana.example.com/login"}
		oc.Spec.Scopes = []oauthv1alpha1.Scope{"openid", "offline_access"}
		oc.Spec.TokenEndpointAuthMethod = "client_secret_basic"
		oc.Spec.SkipConsent = true
		oc.Spec.TokenLifespans = &oauthv1alpha1.TokenLifespans{AccessToken: "15m"}
	})
	ci := client("ci", "deploy", func(oc *oauthv1alpha1.OAuthClient) {
		oc.Spec.GrantTypes = []oauthv1alpha1.GrantType{"client_credentials", oauthv1alpha1.GrantJWTBearer}
		oc.Spec.SkipConsent = true
		oc.Spec.JWTBearer = &oauthv1alpha1.JWTBearer{TrustedIssuers: []oauthv1alpha1.TrustedJWTIssuer{{
			Issuer: "https://ci.example.com", Subjects: []string{"deployer"}, Scopes: []oauthv1alpha1.Scope{"zones.read"},
			JWKS: &oauthv1alpha1.JSONWebKeySet{Keys: []oauthv1alpha1.JSONWebKey{{Kty: "EC", Crv: "P-256", Kid: "k1", X: "x", Y: "y"}}}}}}
	})
	until := metav1.Now()
	creds := Credentials{Secret: "new", PreviousSecret: "old", PreviousUntil: &until}
	tests := map[string]struct {
		oc         *oauthv1alpha1.OAuthClient
		firstParty bool
		check      func(t *testing.T, got map[string]any)
	}{
		"every field, owner namespace verified": {oc, true, func(t *testing.T, got map[string]any) {
			want := map[string]any{"id": "the-id", "ownerNamespace": "obs", "name": "Grafana", "ownerTeam": "observability",
				"ownerContact": "obs@example.com", "skipConsent": true, "secret": "new", "previousSecret": "old",
				"tokenEndpointAuthMethod": "client_secret_basic"}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
			if !slices.Equal(toStrings(got["postLogoutRedirectURIs"]), []string{"https://grafana.example.com/login"}) {
				t.Errorf("postLogoutRedirectURIs = %v", got["postLogoutRedirectURIs"])
			}
			if lt := got["tokenLifespans"].(map[string]any); lt["accessToken"] != "15m" || len(lt) != 1 {
				t.Errorf("tokenLifespans = %v", lt)
			}
		}},
		"skipConsent ignored outside first-party namespaces": {oc, false, func(t *testing.T, got map[string]any) {
			if got["skipConsent"] != nil {
				t.Errorf("skipConsent = %v, want it dropped", got["skipConsent"])
			}
		}},
		"public client gets no secret": {client("obs", "cli", func(oc *oauthv1alpha1.OAuthClient) {
			oc.Spec.TokenEndpointAuthMethod = "none"
		}), false, func(t *testing.T, got map[string]any) {
			if got["secret"] != nil || got["previousSecret"] != nil {
				t.Errorf("public client carries a secret: %v", got)
			}
		}},
		"jwtBearer trust carried with its keys": {ci, true, func(t *testing.T, got map[string]any) {
			jb, _ := got["jwtBearer"].(map[string]any)
			tis, _ := jb["trustedIssuers"].([]any)
			if len(tis) != 1 {
				t.Fatalf("jwtBearer = %v; want one trusted issuer", got["jwtBearer"])
			}
			ti := tis[0].(map[string]any)
			keys, _ := ti["jwks"].(map[string]any)["keys"].([]any)
			if ti["issuer"] != "https://ci.example.com" || !slices.Equal(toStrings(ti["subjects"]), []string{"deployer"}) ||
				!slices.Equal(toStrings(ti["scopes"]), []string{"zones.read"}) || len(keys) != 1 {
				t.Errorf("trusted issuer = %v", ti)
			}
		}},
		"jwt-bearer and its trust dropped outside first-party namespaces": {ci, false, func(t *testing.T, got map[string]any) {
			if got["jwtBearer"] != nil || !slices.Equal(toStrings(got["grantTypes"]), []string{"client_credentials"}) || got["skipConsent"] != nil {
				t.Errorf("grantTypes = %v, jwtBearer = %v, skipConsent = %v; want client_credentials alone", got["grantTypes"],
					got["jwtBearer"], got["skipConsent"])
			}
		}},
		"defaults when the API server has not filled them": {client("obs", "bare"), false, func(t *testing.T, got map[string]any) {
			if got["tokenEndpointAuthMethod"] != "client_secret_basic" || !slices.Equal(toStrings(got["grantTypes"]), []string{"authorization_code"}) {
				t.Errorf("defaults: %v", got)
			}
		}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			raw, _ := json.Marshal(Desired(tt.oc, "the-id", creds, tt.firstParty))
			var got map[string]any
			_ = json.Unmarshal(raw, &got)
			tt.check(t, got)
		})
	}
}

func toStrings(v any) []string {
	items := v.([]any)
	out := make([]string, 0, len(items))
	for _, s := range items {
		out = append(out, s.(string))
	}
	return out
}

func TestSecret(t *testing.T) {
	oc := client("obs", "grafana")
	if SecretName(oc) != "grafana-oauth" || !CreatesSecret(oc) || !NeedsSecret(oc) {
		t.Errorf("defaults: name %s creates %v needs %v", SecretName(oc), CreatesSecret(oc), NeedsSecret(oc))
	}
	no := false
	oc.Spec.Secret = oauthv1alpha1.ClientSecret{Name: "mine", Create: &no}
	if SecretName(oc) != "mine" || CreatesSecret(oc) {
		t.Errorf("spec.secret: name %s creates %v", SecretName(oc), CreatesSecret(oc))
	}
	d := SecretData("id", "s", "https://auth.example.com/")
	if string(d[KeyTokenURL]) != "https://auth.example.com/oauth2/token" || string(d[KeyClientID]) != "id" {
		t.Errorf("SecretData = %v", d)
	}
}

func TestPlanRotation(t *testing.T) {
	t0 := time.Date(2026, 11, 24, 12, 0, 0, 0, time.UTC)
	rot := &oauthv1alpha1.SecretRotation{Every: "2160h", Overlap: "24h"}
	tests := map[string]struct {
		rot                  *oauthv1alpha1.SecretRotation
		rotatedAt, prev, now time.Time
		rotate, drop         bool
		next                 time.Duration
	}{
		"no rotation, no previous":       {nil, t0, time.Time{}, t0.Add(time.Hour), false, false, 0},
		"not due yet":                    {rot, t0, time.Time{}, t0.Add(24 * time.Hour), false, false, 2136 * time.Hour},
		"due":                            {rot, t0, time.Time{}, t0.Add(2160 * time.Hour), true, false, 2160 * time.Hour},
		"overdue after downtime":         {rot, t0, time.Time{}, t0.Add(3000 * time.Hour), true, false, 2160 * time.Hour},
		"in the overlap":                 {rot, t0, t0.Add(24 * time.Hour), t0.Add(time.Hour), false, false, 23 * time.Hour},
		"overlap over":                   {rot, t0, t0.Add(24 * time.Hour), t0.Add(25 * time.Hour), false, true, 2135 * time.Hour},
		"rotation removed, overlap over": {nil, t0, t0.Add(time.Hour), t0.Add(2 * time.Hour), false, true, 0},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			p, err := PlanRotation(tt.rot, tt.rotatedAt, tt.prev, tt.now)
			if err != nil || p.Rotate != tt.rotate || p.DropPrevious != tt.drop || p.Next != tt.next {
				t.Errorf("PlanRotation = %+v, %v; want rotate %v drop %v next %v", p, err, tt.rotate, tt.drop, tt.next)
			}
		})
	}
	if d, _ := Overlap(nil); d != 24*time.Hour {
		t.Errorf("default overlap %v, want 24h", d)
	}
}
