package resources

import (
	"encoding/json"
	"maps"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

func server(mut ...func(*oauthv1alpha1.TokenServer)) *oauthv1alpha1.TokenServer {
	ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: "platform", Name: "auth"},
		Spec: oauthv1alpha1.TokenServerSpec{Issuer: "https://auth.example.com", Image: "tokenserver:v1",
			Database: &oauthv1alpha1.DatabaseSpec{Managed: &oauthv1alpha1.ManagedDatabase{}},
			Tokens: oauthv1alpha1.TokenSettings{AccessTokenFormat: "jwt", AccessTokenLifespan: "15m", SigningAlgorithm: "RS256",
				RefreshGracePeriod: "30s"}}}
	for _, m := range mut {
		m(ts)
	}
	return ts
}

func envOf(c corev1.Container) map[string]string {
	out := map[string]string{}
	for _, e := range c.Env {
		out[e.Name] = e.Value
	}
	return out
}

func TestDSNSecret(t *testing.T) {
	tests := map[string]struct {
		ts        *oauthv1alpha1.TokenServer
		name, key string
	}{
		"managed database": {server(), "auth-db", "dsn"},
		"external, default key": {server(func(ts *oauthv1alpha1.TokenServer) {
			ts.Spec.Database = &oauthv1alpha1.DatabaseSpec{External: &oauthv1alpha1.ExternalDatabase{
				SecretRef: oauthv1alpha1.SecretKeyReference{Name: "pg"}}}
		}), "pg", "dsn"},
		"external, own key": {server(func(ts *oauthv1alpha1.TokenServer) {
			ts.Spec.Database = &oauthv1alpha1.DatabaseSpec{External: &oauthv1alpha1.ExternalDatabase{
				SecretRef: oauthv1alpha1.SecretKeyReference{Name: "cnpg-app", Key: "uri"}}}
		}), "cnpg-app", "uri"},
		"managed, moved to a copy by an upgrade": {server(func(ts *oauthv1alpha1.TokenServer) {
			ts.Status.Database = &oauthv1alpha1.DatabaseRef{SecretName: "auth-0badc0de-db", Key: "dsn"}
		}), "auth-0badc0de-db", "dsn"},
		"external, moved to the user's target": {server(func(ts *oauthv1alpha1.TokenServer) {
			ts.Spec.Database = &oauthv1alpha1.DatabaseSpec{External: &oauthv1alpha1.ExternalDatabase{
				SecretRef: oauthv1alpha1.SecretKeyReference{Name: "pg"}}}
			ts.Status.Database = &oauthv1alpha1.DatabaseRef{SecretName: "pg-v2", Key: "uri"}
		}), "pg-v2", "uri"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			n, k := DSNSecretRef(tt.ts)
			if n != tt.name || k != tt.key {
				t.Fatalf("DSNSecret = %s/%s, want %s/%s", n, k, tt.name, tt.key)
			}
			job := MigrationJob(tt.ts, "img")
			vol := job.Spec.Template.Spec.Volumes[0].Secret
			if vol.SecretName != tt.name || vol.Items[0].Key != tt.key || vol.Items[0].Path != "dsn" {
				t.Fatalf("the migrations Job mounts %+v, want %s key %s as dsn", vol, tt.name, tt.key)
			}
		})
	}
}

func TestDatabaseSecretDSN(t *testing.T) {
	s := DatabaseSecret(server(), "p@ss/word:1")
	u, err := url.Parse(string(s.Data[KeyDSN]))
	if err != nil {
		t.Fatal(err)
	}
	pw, _ := u.User.Password()
	if u.Host != "auth-db.platform.svc:5432" || u.User.Username() != "kubeoauth" || pw != "p@ss/word:1" ||
		u.Path != "/kubeoauth" || u.Query().Get("sslmode") != "disable" {
		t.Fatalf("DSN %s does not reach the bundled database with the password", s.Data[KeyDSN])
	}
	if string(s.Data[KeyPassword]) != "p@ss/word:1" {
		t.Fatalf("password key = %q", s.Data[KeyPassword])
	}
}

func TestDatabaseStatefulSet(t *testing.T) {
	tests := map[string]struct {
		db           oauthv1alpha1.ManagedDatabase
		size, image  string
		storageClass *string
	}{
		"defaults":           {oauthv1alpha1.ManagedDatabase{}, "1Gi", DefaultPostgresImage, nil},
		"size, class, image": {oauthv1alpha1.ManagedDatabase{StorageSize: resource.MustParse("10Gi"), StorageClassName: ptr.To("fast"), Image: "postgres:16"}, "10Gi", "postgres:16", ptr.To("fast")},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			ts := server(func(ts *oauthv1alpha1.TokenServer) { ts.Spec.Database.Managed = &tt.db })
			sts := DatabaseStatefulSet(ts)
			claim := sts.Spec.VolumeClaimTemplates[0]
			if got := claim.Spec.Resources.Requests[corev1.ResourceStorage]; got.String() != tt.size {
				t.Errorf("storage = %s, want %s", got.String(), tt.size)
			}
			if !reflect.DeepEqual(claim.Spec.StorageClassName, tt.storageClass) {
				t.Errorf("storageClassName = %v, want %v", claim.Spec.StorageClassName, tt.storageClass)
			}
			c := sts.Spec.Template.Spec.Containers[0]
			if c.Image != tt.image {
				t.Errorf("image = %s, want %s", c.Image, tt.image)
			}
			if sts.Spec.ServiceName != DatabaseService(ts).Name || *sts.Spec.Replicas != 1 {
				t.Errorf("serviceName %s replicas %d", sts.Spec.ServiceName, *sts.Spec.Replicas)
			}
			if sts.Spec.PersistentVolumeClaimRetentionPolicy.WhenDeleted != "Retain" {
				t.Error("deleting the TokenServer must keep the database's claim")
			}
			env := map[string]corev1.EnvVar{}
			for _, e := range c.Env {
				env[e.Name] = e
			}
			if env["POSTGRES_PASSWORD"].ValueFrom.SecretKeyRef.Name != "auth-db" || env["POSTGRES_USER"].Value != "kubeoauth" {
				t.Errorf("env %+v does not take the generated password", env)
			}
			if !reflect.DeepEqual(labelsSubset(sts.Spec.Template.Labels, sts.Spec.Selector.MatchLabels), sts.Spec.Selector.MatchLabels) ||
				!reflect.DeepEqual(DatabaseService(ts).Spec.Selector, sts.Spec.Selector.MatchLabels) {
				t.Error("the pods, the selector and the Service must agree")
			}
		})
	}
}

func labelsSubset(all, keys map[string]string) map[string]string {
	out := map[string]string{}
	for k := range keys {
		out[k] = all[k]
	}
	return out
}

func TestTokenServerStatefulSet(t *testing.T) {
	users := func(key string) func(*oauthv1alpha1.TokenServer) {
		return func(ts *oauthv1alpha1.TokenServer) {
			ts.Spec.Login = &oauthv1alpha1.LoginSpec{UsersSecretRef: &oauthv1alpha1.SecretKeyReference{Name: "auth-users", Key: key}}
		}
	}
	tests := map[string]struct {
		ts          *oauthv1alpha1.TokenServer
		in          Inputs
		replicas    int32
		env         map[string]string // must be set to these values
		absent      []string          // must not be set
		usersSecret string
		usersKey    string
	}{
		"first version": {ts: server(), in: Inputs{Color: ColorBlue, Image: "tokenserver:v1", Replicas: 1, ConfigHash: "h1"}, replicas: 1,
			env: map[string]string{"KUBEOAUTH_ISSUER": "https://auth.example.com", "KUBEOAUTH_ACCESS_TOKEN_FORMAT": "jwt",
				"KUBEOAUTH_ACCESS_TOKEN_LIFESPAN": "15m", "KUBEOAUTH_SIGNING_ALGORITHM": "RS256", "KUBEOAUTH_REFRESH_GRACE_PERIOD": "30s",
				"KUBEOAUTH_DSN_FILE": "/etc/kubeoauth/db/dsn", "KUBEOAUTH_LISTEN": ":4444", "KUBEOAUTH_ADMIN_LISTEN": ":4445",
				"KUBEOAUTH_METRICS_LISTEN": ":4446"},
			absent: []string{"KUBEOAUTH_PREVIOUS_SIGNING_KEY_FILE", "KUBEOAUTH_USERS_FILE", "KUBEOAUTH_ID_TOKEN_LIFESPAN", "KUBEOAUTH_REQUIRE_PKCE",
				"KUBEOAUTH_REQUIRE_PUSHED_AUTHORIZATION_REQUESTS", "KUBEOAUTH_DEVICE_CODE_LIFESPAN", "KUBEOAUTH_DEVICE_POLL_INTERVAL",
				"KUBEOAUTH_CLIENT_IP_HEADER", "KUBEOAUTH_CLIENT_IP_TRUSTED_PROXIES"}},
		"device grant timings": {ts: server(func(ts *oauthv1alpha1.TokenServer) {
			ts.Spec.Tokens.DeviceCodeLifespan, ts.Spec.Tokens.DevicePollInterval = "15m", "10s"
		}),
			in: Inputs{Color: ColorBlue, Replicas: 1}, replicas: 1,
			env: map[string]string{"KUBEOAUTH_DEVICE_CODE_LIFESPAN": "15m", "KUBEOAUTH_DEVICE_POLL_INTERVAL": "10s"}},
		"pushed authorization requests required": {ts: server(func(ts *oauthv1alpha1.TokenServer) { ts.Spec.Tokens.RequirePushedAuthorizationRequests = true }),
			in: Inputs{Color: ColorBlue, Replicas: 1}, replicas: 1, env: map[string]string{"KUBEOAUTH_REQUIRE_PUSHED_AUTHORIZATION_REQUESTS": "true"}},
		"PKCE opted out for legacy apps": {ts: server(func(ts *oauthv1alpha1.TokenServer) { ts.Spec.Tokens.RequirePKCE = ptr.To(false) }),
			in: Inputs{Color: ColorBlue, Replicas: 1}, replicas: 1, env: map[string]string{"KUBEOAUTH_REQUIRE_PKCE": "false"}},
		"after a key rotation, three replicas": {ts: server(func(ts *oauthv1alpha1.TokenServer) { ts.Spec.Replicas = ptr.To[int32](3) }),
			in: Inputs{Color: ColorGreen, Image: "tokenserver:v2", Replicas: 3, HasPreviousKey: true}, replicas: 3,
			env: map[string]string{"KUBEOAUTH_PREVIOUS_SIGNING_KEY_FILE": "/etc/kubeoauth/keys/previous-signing.pem"}},
		"users from a Secret, default key": {ts: server(users("")), in: Inputs{Color: ColorBlue, Replicas: 1}, replicas: 1,
			env: map[string]string{"KUBEOAUTH_USERS_FILE": "/etc/kubeoauth/users/users"}, usersSecret: "auth-users", usersKey: "users"},
		"client addresses from the ingress's header": {ts: server(func(ts *oauthv1alpha1.TokenServer) {
			ts.Spec.Login = &oauthv1alpha1.LoginSpec{UsersSecretRef: &oauthv1alpha1.SecretKeyReference{Name: "auth-users"},
				ClientIPHeader: "X-Forwarded-For", TrustedProxies: []string{"10.244.0.0/16", "fd00::/8"}}
		}), in: Inputs{Color: ColorBlue, Replicas: 1}, replicas: 1,
			env:         map[string]string{"KUBEOAUTH_CLIENT_IP_HEADER": "X-Forwarded-For", "KUBEOAUTH_CLIENT_IP_TRUSTED_PROXIES": "10.244.0.0/16,fd00::/8"},
			usersSecret: "auth-users", usersKey: "users"},
		"users from a Secret, own key": {ts: server(users("htpasswd")), in: Inputs{Color: ColorBlue, Replicas: 1}, replicas: 1,
			env: map[string]string{"KUBEOAUTH_USERS_FILE": "/etc/kubeoauth/users/users"}, usersSecret: "auth-users", usersKey: "htpasswd"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			sts := TokenServerStatefulSet(tt.ts, tt.in)
			if sts.Name != "auth-"+tt.in.Color || *sts.Spec.Replicas != tt.replicas {
				t.Fatalf("StatefulSet %s with %d replicas", sts.Name, *sts.Spec.Replicas)
			}
			pod := sts.Spec.Template
			c := pod.Spec.Containers[0]
			if c.Image != tt.in.Image || pod.Annotations[AnnotationConfig] != tt.in.ConfigHash {
				t.Errorf("image %s, config hash %s", c.Image, pod.Annotations[AnnotationConfig])
			}
			env := envOf(c)
			for k, v := range tt.env {
				if env[k] != v {
					t.Errorf("%s = %q, want %q", k, env[k], v)
				}
			}
			for _, k := range tt.absent {
				if _, ok := env[k]; ok {
					t.Errorf("%s is set, want it unset", k)
				}
			}
			var users *corev1.SecretVolumeSource
			for _, v := range pod.Spec.Volumes {
				if v.Name == "users" {
					users = v.Secret
				}
			}
			if (users != nil) != (tt.usersSecret != "") ||
				(users != nil && (users.SecretName != tt.usersSecret || users.Items[0].Key != tt.usersKey)) {
				t.Errorf("users volume %+v, want Secret %q key %q", users, tt.usersSecret, tt.usersKey)
			}
			if *pod.Spec.AutomountServiceAccountToken || pod.Spec.ServiceAccountName != "auth-tokenserver" {
				t.Error("the token server needs no Kubernetes API token")
			}
			if !reflect.DeepEqual(labelsSubset(pod.Labels, sts.Spec.Selector.MatchLabels), sts.Spec.Selector.MatchLabels) {
				t.Errorf("pod labels %v do not match the selector %v", pod.Labels, sts.Spec.Selector.MatchLabels)
			}
			if svc := HeadlessService(tt.ts, tt.in.Color); !reflect.DeepEqual(svc.Spec.Selector, sts.Spec.Selector.MatchLabels) {
				t.Errorf("Service %s selects %v, the StatefulSet %v", svc.Name, svc.Spec.Selector, sts.Spec.Selector.MatchLabels)
			}
			// The pods serve only once the operator labels them: the template never
			// carries the label the public and admin Services select.
			if _, ok := pod.Labels[oauthv1alpha1.LabelServing]; ok {
				t.Errorf("the pod template carries %s: new pods would serve before they are promoted", oauthv1alpha1.LabelServing)
			}
			serving := ServingSelector(tt.ts)
			labelled := maps.Clone(pod.Labels)
			labelled[oauthv1alpha1.LabelServing] = "true"
			if !reflect.DeepEqual(labelsSubset(labelled, serving), serving) || reflect.DeepEqual(labelsSubset(pod.Labels, serving), serving) {
				t.Errorf("the serving selector %v must select the pods %v only once they are labelled", serving, pod.Labels)
			}
			if !reflect.DeepEqual(TokenServerStatefulSet(tt.ts, tt.in), sts) {
				t.Error("the same inputs built a different StatefulSet: every pass would roll the pods")
			}
		})
	}
}

func TestNames(t *testing.T) {
	ts := server()
	if a, b := MigrationJobName(ts, "tokenserver:v1"), MigrationJobName(ts, "tokenserver:v1"); a != b {
		t.Errorf("the same image gives Jobs %s and %s", a, b)
	}
	if a, b := MigrationJobName(ts, "tokenserver:v1"), MigrationJobName(ts, "tokenserver:v2"); a == b {
		t.Errorf("a new image must get a new migrations Job, got %s twice", a)
	}
	if got := AdminEndpoint(ts); got != "https://auth-admin.platform.svc:4445" {
		t.Errorf("AdminEndpoint = %s", got)
	}
	if got := PodDisruptionBudget(ts).Spec.Selector.MatchLabels; got[LabelColor] != "" {
		t.Errorf("the PDB must cover both colors, selects %v", got)
	}
}

func TestConfigMapScopes(t *testing.T) {
	ts := server(func(ts *oauthv1alpha1.TokenServer) {
		ts.Spec.ScopeDescriptions = []oauthv1alpha1.ScopeDescription{{Name: "zones.read", Description: "Read your DNS zones"}}
	})
	var got map[string]string
	if err := json.Unmarshal([]byte(ConfigMap(ts).Data[KeyScopes]), &got); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, map[string]string{"zones.read": "Read your DNS zones"}) {
		t.Errorf("scopes.json = %v", got)
	}
	if ConfigMap(server()).Data[KeyScopes] != "{}" {
		t.Error("no descriptions must still give a readable file")
	}
}

// TestAdminTLSMount: the server gets its serving pair and never the CA's key.
func TestAdminTLSMount(t *testing.T) {
	ts := server()
	sts := TokenServerStatefulSet(ts, Inputs{Color: ColorBlue, Image: "tokenserver:v1", Replicas: 1})
	env := map[string]string{}
	for _, e := range sts.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	if env["KUBEOAUTH_ADMIN_TLS_CERT_FILE"] != "/etc/kubeoauth/admin-tls/tls.crt" || env["KUBEOAUTH_ADMIN_TLS_KEY_FILE"] != "/etc/kubeoauth/admin-tls/tls.key" {
		t.Errorf("env %v", env)
	}
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if v.Secret == nil || v.Secret.SecretName != AdminTLSSecretName(ts) {
			continue
		}
		keys := make([]string, 0, len(v.Secret.Items))
		for _, it := range v.Secret.Items {
			keys = append(keys, it.Key)
		}
		if !slices.Equal(keys, []string{KeyTLSCert, KeyTLSKey}) {
			t.Errorf("the pods mount keys %v of %s, want only the serving pair", keys, v.Secret.SecretName)
		}
		return
	}
	t.Error("no volume of the admin TLS Secret")
}

// TestNetworkPolicies: the public port is open to all, the metrics port to all or to
// spec.metrics.from and the operator, the admin port to the operator's pods and this
// server's verification Job only, the database to this server's own pods only.
func TestNetworkPolicies(t *testing.T) {
	ts := server()
	op := OperatorPeer{Namespace: "kubeoauth-system", PodLabels: map[string]string{"app.kubernetes.io/component": "manager"}}
	np := ServerNetworkPolicy(ts, op)
	if len(np.Spec.Ingress) != 3 {
		t.Fatalf("ingress %+v", np.Spec.Ingress)
	}
	public, metrics, admin := np.Spec.Ingress[0], np.Spec.Ingress[1], np.Spec.Ingress[2]
	if metrics.Ports[0].Port.StrVal != "metrics" || len(metrics.From) != 0 {
		t.Errorf("metrics rule %+v: want port metrics from anyone", metrics)
	}
	if public.Ports[0].Port.StrVal != "http" || len(public.From) != 0 {
		t.Errorf("public rule %+v: want port http from anyone", public)
	}
	if admin.Ports[0].Port.StrVal != "admin" || len(admin.From) != 2 ||
		admin.From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "kubeoauth-system" ||
		admin.From[0].PodSelector.MatchLabels["app.kubernetes.io/component"] != "manager" ||
		admin.From[1].PodSelector.MatchLabels[LabelComponent] != componentVerify || admin.From[1].PodSelector.MatchLabels[LabelInstance] != "auth" {
		t.Errorf("admin rule %+v: want port admin from the operator's pods and the verification Job only", admin)
	}
	if np.Spec.PodSelector.MatchLabels[LabelColor] != "" {
		t.Error("the policy must cover the pods of both colors")
	}
	// With spec.metrics.from, the metrics port admits those peers and the
	// operator's pods, which read a new color's metrics during an upgrade, only.
	ts.Spec.Metrics = &oauthv1alpha1.MetricsAccess{From: []oauthv1alpha1.MetricsPeer{
		{NamespaceSelector: &oauthv1alpha1.PeerSelector{MatchLabels: map[string]oauthv1alpha1.LabelValue{"kubernetes.io/metadata.name": "monitoring"}},
			PodSelector: &oauthv1alpha1.PeerSelector{MatchExpressions: []oauthv1alpha1.PeerSelectorRequirement{
				{Key: "app.kubernetes.io/name", Operator: metav1.LabelSelectorOpIn, Values: []oauthv1alpha1.LabelValue{"prometheus"}}}}},
		{IPBlock: &oauthv1alpha1.PeerIPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}}}}}
	metrics = ServerNetworkPolicy(ts, op).Spec.Ingress[1]
	want := []networkingv1.NetworkPolicyPeer{
		{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "kubeoauth-system"}},
			PodSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/component": "manager"}}},
		{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}},
			PodSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: "app.kubernetes.io/name", Operator: metav1.LabelSelectorOpIn, Values: []string{"prometheus"}}}}},
		{IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}}}}
	if metrics.Ports[0].Port.StrVal != "metrics" || !equality.Semantic.DeepEqual(metrics.From, want) {
		t.Errorf("metrics rule from %+v: want port metrics from the operator's pods and spec.metrics.from only, %+v", metrics.From, want)
	}
	db := DatabaseNetworkPolicy(ts)
	from := db.Spec.Ingress[0].From[0]
	if from.NamespaceSelector != nil || from.PodSelector.MatchLabels[LabelInstance] != "auth" ||
		!slices.Equal(from.PodSelector.MatchExpressions[0].Values, []string{"tokenserver", "migrations", "upgrade-replay"}) {
		t.Errorf("database peers %+v: want this server's tokenserver, migrations and replay pods, in its namespace", from)
	}
}

// TestPodSecurity checks each pod the operator runs as a kubelet would run it: the
// Pod Security Standard "restricted", and every file of every Secret or ConfigMap
// volume readable by the container's user, given that a kubelet writes them
// root-owned with the volume's mode and, with an fsGroup, group-owned by it and
// group-readable.
func TestPodSecurity(t *testing.T) {
	ts := server(func(ts *oauthv1alpha1.TokenServer) {
		ts.Spec.Login = &oauthv1alpha1.LoginSpec{UsersSecretRef: &oauthv1alpha1.SecretKeyReference{Name: "auth-users"}}
	})
	tests := map[string]struct {
		pod      corev1.PodSpec
		uid      int64
		writable []string // paths the process writes, each on a volume
	}{
		"token server": {pod: TokenServerStatefulSet(ts, Inputs{Color: ColorBlue, Image: "tokenserver:v1"}).Spec.Template.Spec, uid: ServerUID},
		"migrations":   {pod: MigrationJob(ts, "tokenserver:v1").Spec.Template.Spec, uid: ServerUID},
		"copy": {pod: CopyJob(ts, "c", "tokenserver:v2", "0badc0de", "http://b", oauthv1alpha1.DatabaseRef{SecretName: "auth-db", Key: "dsn"},
			oauthv1alpha1.DatabaseRef{SecretName: "auth-0badc0de-db", Key: "dsn"}).Spec.Template.Spec, uid: ServerUID},
		"cleanup": {pod: CleanupJob(ts, "c", "tokenserver:v1", oauthv1alpha1.DatabaseRef{SecretName: "auth-db", Key: "dsn"},
			"kubeoauth_0badc0de").Spec.Template.Spec, uid: ServerUID},
		"replay": {pod: ReplayDeployment(ts, "r", "tokenserver:v2", "0badc0de", "forward", oauthv1alpha1.DatabaseRef{SecretName: "auth-db", Key: "dsn"},
			oauthv1alpha1.DatabaseRef{SecretName: "auth-0badc0de-db", Key: "dsn"}).Spec.Template.Spec, uid: ServerUID},
		"bundled server": {pod: withClaims(DatabaseStatefulSet(ts)), uid: PostgresUID, writable: []string{pgData + "/pgdata", pgRun, pgTmp}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			ps := tt.pod.SecurityContext
			if ps == nil || !ptr.Deref(ps.RunAsNonRoot, false) || ptr.Deref(ps.RunAsUser, 0) != tt.uid ||
				ptr.Deref(ps.RunAsGroup, 0) != tt.uid || ps.SeccompProfile == nil ||
				ps.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Fatalf("pod securityContext %+v: want non-root uid and gid %d, seccomp RuntimeDefault", ps, tt.uid)
			}
			for _, c := range tt.pod.Containers {
				s := c.SecurityContext
				if s == nil || ptr.Deref(s.AllowPrivilegeEscalation, true) || !ptr.Deref(s.ReadOnlyRootFilesystem, false) ||
					s.Capabilities == nil || !reflect.DeepEqual(s.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
					len(s.Capabilities.Add) > 0 || s.RunAsUser != nil || ptr.Deref(s.Privileged, false) {
					t.Errorf("container %s securityContext %+v: want no escalation, all capabilities dropped, read-only root", c.Name, s)
				}
				for _, m := range c.VolumeMounts {
					for _, f := range volumeFiles(t, tt.pod, m.Name) {
						if !kubeletReadable(f.mode, ps.FSGroup, tt.uid, *ps.RunAsGroup) {
							t.Errorf("container %s cannot read %s/%s (mode %#o, fsGroup %v)", c.Name, m.MountPath, f.path, f.mode, ps.FSGroup)
						}
					}
				}
				for _, w := range tt.writable {
					if !onWritableVolume(c, w) {
						t.Errorf("container %s writes %s, which is on its read-only root file system", c.Name, w)
					}
				}
			}
		})
	}
}

// withClaims is the StatefulSet's pod as the controller makes it: a volume per claim.
func withClaims(sts *appsv1.StatefulSet) corev1.PodSpec {
	pod := *sts.Spec.Template.Spec.DeepCopy()
	for _, c := range sts.Spec.VolumeClaimTemplates {
		pod.Volumes = append(pod.Volumes, corev1.Volume{Name: c.Name, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c.Name + "-" + sts.Name + "-0"}}})
	}
	return pod
}

type volumeFile struct {
	path string
	mode int32
}

// volumeFiles lists the files a Secret or ConfigMap volume holds, with the mode the
// kubelet writes them with (defaultMode, else 0644; an item's own mode first). Other
// volumes hold none yet.
func volumeFiles(t *testing.T, pod corev1.PodSpec, name string) []volumeFile {
	t.Helper()
	for _, v := range pod.Volumes {
		if v.Name != name {
			continue
		}
		var items []corev1.KeyToPath
		var mode *int32
		switch {
		case v.Secret != nil:
			items, mode = v.Secret.Items, v.Secret.DefaultMode
		case v.ConfigMap != nil:
			items, mode = v.ConfigMap.Items, v.ConfigMap.DefaultMode
		default:
			return nil
		}
		if len(items) == 0 {
			items = []corev1.KeyToPath{{Path: "<any key>"}}
		}
		var out []volumeFile
		for _, it := range items {
			out = append(out, volumeFile{it.Path, ptr.Deref(it.Mode, ptr.Deref(mode, 0o644))})
		}
		return out
	}
	t.Fatalf("volumeMount %s: no such volume", name)
	return nil
}

// kubeletReadable says whether a process of uid and gid, with fsGroup as a
// supplementary group, reads a root-owned file the kubelet wrote with mode.
func kubeletReadable(mode int32, fsGroup *int64, uid, gid int64) bool {
	switch {
	case uid == 0:
		return true
	case fsGroup != nil:
		return (mode|0o440)&0o040 != 0
	case gid == 0:
		return mode&0o040 != 0
	}
	return mode&0o004 != 0
}

func onWritableVolume(c corev1.Container, path string) bool {
	for _, m := range c.VolumeMounts {
		if !m.ReadOnly && (path == m.MountPath || strings.HasPrefix(path, m.MountPath+"/")) {
			return true
		}
	}
	return false
}

// TestUpgradeJobs: each upgrade Job runs the new image with the command its phase
// needs and mounts only what that command reads: the database Jobs the DSN, the
// verification the admin token and the CA certificate (never the CA's key).
func TestUpgradeJobs(t *testing.T) {
	ts := server()
	tests := map[string]struct {
		job     *batchv1.Job
		args    []string
		secrets map[string][]string // Secret name: the keys mounted
		policy  corev1.TerminationMessagePolicy
		retries int32
	}{
		"plan": {job: PlanJob(ts, "auth-1a2b3c4d-plan", "tokenserver:v2"), args: []string{"migrate", "plan"},
			secrets: map[string][]string{"auth-db": {"dsn"}}, policy: corev1.TerminationMessageFallbackToLogsOnError, retries: 2},
		"expand": {job: ExpandJob(ts, "auth-1a2b3c4d-expand", "tokenserver:v2"), args: []string{"migrate", "up", "--expand-only"},
			secrets: map[string][]string{"auth-db": {"dsn"}}, policy: corev1.TerminationMessageFallbackToLogsOnError, retries: 6},
		"contract": {job: ContractJob(ts, "auth-1a2b3c4d-contract", "tokenserver:v2"), args: []string{"migrate", "up"},
			secrets: map[string][]string{"auth-db": {"dsn"}}, policy: corev1.TerminationMessageFallbackToLogsOnError, retries: 6},
		"verify": {job: VerifyJob(ts, "auth-1a2b3c4d-verify", "tokenserver:v2", ColorGreen, ColorBlue),
			args: []string{"verify", "--server", "http://auth-green.platform.svc:4444", "--peer", "http://auth-blue.platform.svc:4444",
				"--admin-url", "https://auth-green.platform.svc:4445", "--admin-token-file", "/etc/kubeoauth/admin/token",
				"--admin-ca-file", "/etc/kubeoauth/admin-tls/ca.crt", "--admin-server-name", "auth-admin.platform.svc",
				"--issuer", "https://auth.example.com", "--termination-log", "/dev/termination-log"},
			secrets: map[string][]string{"auth-admin": {"token"}, "auth-admin-tls": {"ca.crt"}},
			policy:  corev1.TerminationMessageFallbackToLogsOnError},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			spec := tt.job.Spec.Template.Spec
			c := spec.Containers[0]
			if c.Image != "tokenserver:v2" || !slices.Equal(c.Args, tt.args) {
				t.Errorf("runs %s %v, want %v", c.Image, c.Args, tt.args)
			}
			if c.TerminationMessagePolicy != tt.policy || *tt.job.Spec.BackoffLimit != tt.retries {
				t.Errorf("termination message policy %q, %d retries", c.TerminationMessagePolicy, *tt.job.Spec.BackoffLimit)
			}
			got := map[string][]string{}
			for _, v := range spec.Volumes {
				for _, item := range v.Secret.Items {
					got[v.Secret.SecretName] = append(got[v.Secret.SecretName], item.Key)
				}
			}
			if !reflect.DeepEqual(got, tt.secrets) {
				t.Errorf("mounts %v, want %v", got, tt.secrets)
			}
			if *spec.AutomountServiceAccountToken || spec.RestartPolicy != corev1.RestartPolicyNever {
				t.Error("a Job's pod needs no API token and must not restart in place")
			}
		})
	}
	// The database admits migrations pods; the admin port admits the verification's.
	if PlanJob(ts, "p", "i").Spec.Template.Labels[LabelComponent] != componentMigrations {
		t.Error("the plan Job's pods must be migrations pods, which the database's NetworkPolicy admits")
	}
	admin := ServerNetworkPolicy(ts, OperatorPeer{Namespace: "kubeoauth-system"}).Spec.Ingress[2]
	verify := VerifyJob(ts, "v", "i", ColorGreen, ColorBlue).Spec.Template.Labels
	if len(admin.From) != 2 || admin.From[1].NamespaceSelector != nil ||
		!reflect.DeepEqual(labelsSubset(verify, admin.From[1].PodSelector.MatchLabels), admin.From[1].PodSelector.MatchLabels) {
		t.Errorf("the admin port admits %+v; the verification pods are %v", admin.From, verify)
	}
}
