package controllers_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/adminpki"
	"github.com/kubeoauth/kubeoauth/internal/resources"
	"github.com/kubeoauth/kubeoauth/internal/signingkey"
	"github.com/kubeoauth/kubeoauth/internal/testing/tcpproxy"
	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// hostIP is an address of this machine an EndpointSlice may hold; the test puts the
// suite's token server behind one.
func hostIP(t *testing.T) string {
	t.Helper()
	ip, err := testenv.HostIP()
	if err != nil {
		t.Fatal(err)
	}
	return ip
}

func get(t *testing.T, ns, name string, obj client.Object) {
	t.Helper()
	eventually(t, 20*time.Second, "get "+name, func() bool {
		return k8s.Get(context.Background(), types.NamespacedName{Namespace: ns, Name: name}, obj) == nil
	}, nil)
}

// TestManagedTokenServer creates a bundled TokenServer and checks every object the
// operator builds, in order: database first, then the migrations Job, then the
// token server. envtest runs no kubelet and no StatefulSet or Job controller, so the
// test plays them by writing the status they would write (make test-e2e runs the real
// ones); the admin API behind the EndpointSlice is the suite's real token server.
func TestManagedTokenServer(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t, "managed", nil)
	for name, data := range map[string]map[string]string{
		"auth-users": {"users": "alice:$2y$10$abcdefghijklmnopqrstuuDCmUqMzDpFOe5YDz7L9dNaUv4ABQWnS"},
		// A Secret the user made is kept, not replaced: here, the suite server's token.
		"auth-admin": {"token": adminToken},
	} {
		if err := k8s.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, StringData: data}); err != nil {
			t.Fatal(err)
		}
	}
	ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth"},
		Spec: oauthv1alpha1.TokenServerSpec{Issuer: oauthv1alpha1.URL(issuer), Image: "kubeoauth/tokenserver:test",
			Replicas:          ptr.To[int32](2),
			Database:          &oauthv1alpha1.DatabaseSpec{Managed: &oauthv1alpha1.ManagedDatabase{StorageSize: resource.MustParse("2Gi")}},
			Login:             &oauthv1alpha1.LoginSpec{UsersSecretRef: &oauthv1alpha1.SecretKeyReference{Name: "auth-users"}},
			ScopeDescriptions: []oauthv1alpha1.ScopeDescription{{Name: "zones.read", Description: "Read your DNS zones"}}}}
	if err := k8s.Create(ctx, ts); err != nil {
		t.Fatal(err)
	}
	// Its pods are the suite's token server behind proxies, the one every test uses:
	// left in place, its owner sweep (a bundled server's, always on) would judge the
	// clients of tests that run after it.
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ts) })

	// 1. Keys, the database and its password; nothing of the server before it.
	waitCondition(t, ts, oauthv1alpha1.ConditionProgressing, metav1.ConditionTrue, "WaitingForDatabase")
	var keys, dbSecret corev1.Secret
	get(t, ns, "auth-keys", &keys)
	key, err := signingkey.Parse(keys.Data[resources.KeySigningKey])
	if err != nil || key.Algorithm != signingkey.ES256 || len(keys.Data[resources.KeyHMAC]) < 32 {
		t.Fatalf("keys Secret: signing key %v (%v), HMAC of %d bytes", key, err, len(keys.Data[resources.KeyHMAC]))
	}
	get(t, ns, "auth-db", &dbSecret)
	dsn, err := url.Parse(string(dbSecret.Data["dsn"]))
	if err != nil || dsn.Host != "auth-db."+ns+".svc:5432" {
		t.Fatalf("DSN %q: %v", dbSecret.Data["dsn"], err)
	}
	var db appsv1.StatefulSet
	get(t, ns, "auth-db", &db)
	if got := db.Spec.VolumeClaimTemplates[0].Spec.Resources.Requests[corev1.ResourceStorage]; got.String() != "2Gi" {
		t.Errorf("database claim %s, want 2Gi", got.String())
	}
	if !metav1.IsControlledBy(&db, ts) || !metav1.IsControlledBy(&keys, ts) {
		t.Error("the database and keys must be owned by the TokenServer")
	}
	var sa corev1.ServiceAccount
	get(t, ns, "auth-tokenserver", &sa)
	if sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Error("the token server's ServiceAccount must not mount an API token")
	}
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "auth-blue"}, &appsv1.StatefulSet{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the token server must wait for the database, got StatefulSet auth-blue (%v)", err)
	}

	// 2. The database is ready (as the StatefulSet controller would report): migrations.
	db.Status = appsv1.StatefulSetStatus{Replicas: 1, ReadyReplicas: 1, AvailableReplicas: 1, CurrentReplicas: 1, UpdatedReplicas: 1,
		ObservedGeneration: db.Generation}
	if err := k8s.Status().Update(ctx, &db); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, ts, oauthv1alpha1.ConditionProgressing, metav1.ConditionTrue, "Migrating")
	var job batchv1.Job
	get(t, ns, resources.MigrationJobName(ts, ts.Spec.Image), &job)
	if c := job.Spec.Template.Spec.Containers[0]; c.Image != ts.Spec.Image || c.Args[0] != "migrate" || c.Args[1] != "up" {
		t.Fatalf("migrations Job runs %s %v", c.Image, c.Args)
	}
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: ns, Name: "auth-blue"}, &appsv1.StatefulSet{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the token server must wait for its migrations (%v)", err)
	}

	// 3. The Job succeeds: the server's StatefulSet and Services.
	now := metav1.Now()
	job.Status = batchv1.JobStatus{StartTime: &now, CompletionTime: &now, Succeeded: 1, Conditions: []batchv1.JobCondition{
		{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now}}}
	if err := k8s.Status().Update(ctx, &job); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, ts, oauthv1alpha1.ConditionProgressing, metav1.ConditionTrue, "RollingOut")
	var sts appsv1.StatefulSet
	get(t, ns, "auth-blue", &sts)
	env := map[string]string{}
	for _, e := range sts.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	if *sts.Spec.Replicas != 2 || env["KUBEOAUTH_USERS_FILE"] == "" || env["KUBEOAUTH_ISSUER"] != issuer ||
		env["KUBEOAUTH_PREVIOUS_SIGNING_KEY_FILE"] != "" {
		t.Fatalf("StatefulSet auth-blue: %d replicas, env %v", *sts.Spec.Replicas, env)
	}
	// The headless Service governs the blue pods; the public and admin Services
	// select the pods the operator labels as serving, of either color.
	for name, want := range map[string]map[string]string{"auth": resources.ServingSelector(ts), "auth-admin": resources.ServingSelector(ts),
		"auth-blue": resources.ServerSelector(ts, "blue")} {
		var svc corev1.Service
		get(t, ns, name, &svc)
		if !maps.Equal(svc.Spec.Selector, want) {
			t.Errorf("Service %s selects %v, want %v", name, svc.Spec.Selector, want)
		}
	}
	if meta := conditionsOf(ts); len(meta) == 0 || ts.Status.ActiveColor != "blue" {
		t.Errorf("status %+v", ts.Status)
	}

	// The admin API's certificate: issued by a CA the operator made for this server,
	// for the admin Service's names; the pods mount the pair, not the CA key.
	var tlsSec corev1.Secret
	get(t, ns, "auth-admin-tls", &tlsSec)
	serving, err := tls.X509KeyPair(tlsSec.Data["tls.crt"], tlsSec.Data["tls.key"])
	if err != nil {
		t.Fatal(err)
	}
	pool, err := adminpki.Pool(tlsSec.Data["ca.crt"])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := serving.Leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "auth-admin." + ns + ".svc"}); err != nil {
		t.Fatalf("the admin certificate does not verify against the operator's CA for auth-admin.%s.svc: %v", ns, err)
	}

	// NetworkPolicies: the public port open, the admin port to the operator's pods
	// (and the upgrade's verification Job), the database to this server's pods only.
	var serverPolicy, dbPolicy networkingv1.NetworkPolicy
	get(t, ns, "auth-tokenserver", &serverPolicy)
	get(t, ns, "auth-db", &dbPolicy)
	if in := serverPolicy.Spec.Ingress; len(in) != 3 || len(in[0].From) != 0 || in[0].Ports[0].Port.StrVal != "http" ||
		in[2].Ports[0].Port.StrVal != "admin" || len(in[2].From) != 2 ||
		in[2].From[0].NamespaceSelector.MatchLabels[corev1.LabelMetadataName] != "kubeoauth-system" ||
		in[2].From[0].PodSelector.MatchLabels["app.kubernetes.io/component"] != "manager" {
		t.Errorf("NetworkPolicy auth-tokenserver ingress %+v", in)
	}
	if in := dbPolicy.Spec.Ingress; len(in) != 1 || in[0].Ports[0].Port.StrVal != "postgres" || len(in[0].From) != 1 ||
		in[0].From[0].NamespaceSelector != nil || in[0].From[0].PodSelector.MatchLabels[resources.LabelInstance] != "auth" ||
		dbPolicy.Spec.PodSelector.MatchLabels[resources.LabelComponent] != "database" {
		t.Errorf("NetworkPolicy auth-db: selects %v, ingress %+v", dbPolicy.Spec.PodSelector, in)
	}
	if !metav1.IsControlledBy(&serverPolicy, ts) || !metav1.IsControlledBy(&dbPolicy, ts) {
		t.Error("the NetworkPolicies must be owned by the TokenServer")
	}

	// 4. Pods ready behind the admin Service: Ready, through the real admin API; but
	// only from a slice the Service owns, and only over TLS with our certificate.
	// The pods are made as the StatefulSet controller and the kubelet would.
	get(t, ns, "auth-blue", &sts)
	if err := (&fakeKubelet{ns: ns, ip: hostIP(t), crashing: map[string]bool{}}).pods(ctx, &sts); err != nil {
		t.Fatal(err)
	}
	var adminSvc corev1.Service
	get(t, ns, "auth-admin", &adminSvc)
	target := admin.BaseURL[len("http://"):]
	slice := func(name, addr string, owned bool) *discoveryv1.EndpointSlice {
		host, port, _ := net.SplitHostPort(addr)
		portNum, _ := strconv.Atoi(port)
		s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: "auth-admin", resources.LabelManagedBy: resources.ManagedBy}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
			Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("admin"), Port: ptr.To(int32(portNum))}}}
		if owned {
			s.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: adminSvc.Name, UID: adminSvc.UID,
				Controller: ptr.To(true)}}
		}
		if err := k8s.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	// A slice anyone could write, with the right labels but not the Service's: never dialled.
	lure := tcpproxy.StartTLS(t, hostIP(t), target, serving)
	slice("auth-admin-forged", lure.Addr, false)
	// The Service's own slice, but the pod behind it presents a certificate of
	// another CA, with the right names: refused before the token is sent.
	otherCA, otherKey, _ := adminpki.NewCA("impostor", time.Now())
	fakeCert, fakeKey, _ := adminpki.IssueServing(otherCA, otherKey, resources.AdminDNSNames(ts), time.Now())
	fake, err := tls.X509KeyPair(fakeCert, fakeKey)
	if err != nil {
		t.Fatal(err)
	}
	impostor := tcpproxy.StartTLS(t, hostIP(t), target, fake)
	owned := slice("auth-admin-abcde", impostor.Addr, true)
	waitReadyMessage(t, ts, "certificate signed by unknown authority")
	if n := lure.Accepted.Load(); n != 0 {
		t.Fatalf("the operator connected %d times to an endpoint of a slice the admin Service does not own", n)
	}
	// The right pod: Ready.
	good := tcpproxy.StartTLS(t, hostIP(t), target, serving)
	get(t, ns, owned.Name, owned)
	host, port, _ := net.SplitHostPort(good.Addr)
	portNum, _ := strconv.Atoi(port)
	owned.Endpoints[0].Addresses = []string{host}
	owned.Ports[0].Port = ptr.To(int32(portNum))
	if err := k8s.Update(ctx, owned); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "Available")
	waitCondition(t, ts, oauthv1alpha1.ConditionProgressing, metav1.ConditionFalse, "Available")
	// status.currentImage is what the labelled, ready pods run, as observed.
	eventually(t, 20*time.Second, "status.currentImage from the serving pods", func() bool {
		_ = k8s.Get(ctx, client.ObjectKeyFromObject(ts), ts)
		return ts.Status.CurrentImage == ts.Spec.Image
	}, func() string { return fmt.Sprintf("status %+v, serving %v", ts.Status, servingPods(t, ns)) })
	if ts.Status.ReadyReplicas != 2 || ts.Status.AdminEndpoint != "https://auth-admin."+ns+".svc:4445" {
		t.Errorf("status %+v", ts.Status)
	}
	if n := lure.Accepted.Load(); n != 0 {
		t.Fatalf("the operator connected %d times to an endpoint of a slice the admin Service does not own", n)
	}

	// An OAuthClient on it is registered through that admin API.
	oc := &oauthv1alpha1.OAuthClient{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "zones"},
		Spec: oauthv1alpha1.OAuthClientSpec{ServerRef: oauthv1alpha1.ServerReference{Name: "auth"}, ClientName: "Zones",
			GrantTypes: []oauthv1alpha1.GrantType{"client_credentials"}}}
	if err := k8s.Create(ctx, oc); err != nil {
		t.Fatal(err)
	}
	waitCondition(t, oc, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "")
	if _, err := admin.GetClient(ctx, oc.Status.ClientID); err != nil {
		t.Fatalf("client %s not on the token server: %v", oc.Status.ClientID, err)
	}

	// A bundled server has no registrar but this operator: a client whose owner
	// namespace does not exist (deleted) is swept.
	gone := "gone-" + strings.TrimPrefix(namespace(t, "x", nil), "x-")
	if _, err := admin.PutClient(ctx, &adminapi.Client{ID: gone + "_app", Secret: strings.Repeat("s", 40), OwnerNamespace: gone,
		ClientMetadata: adminapi.ClientMetadata{Name: "Gone", GrantTypes: []string{"client_credentials"},
			TokenEndpointAuthMethod: "client_secret_basic"}}); err != nil {
		t.Fatal(err)
	}
	setLabels(t, namespace(t, "bystander", nil), map[string]string{"touched": "true"})
	eventually(t, 20*time.Second, "the client of a deleted namespace swept from the bundled server", func() bool {
		_, err := admin.GetClient(ctx, gone+"_app")
		return errors.Is(err, adminapi.ErrNotFound)
	}, nil)

	// 5. A pass with nothing new changes nothing: the StatefulSet is not rewritten.
	time.Sleep(2 * time.Second)
	get(t, ns, "auth-blue", &sts)
	if sts.Generation != 1 {
		t.Errorf("StatefulSet auth-blue at generation %d after passes with nothing new: each pass rewrites it", sts.Generation)
	}

	// 6. The users Secret changes (a user added): the pods do not roll. The token
	// server reads the file again when the kubelet updates the volume (the local
	// cluster's node test TestSecretVolumeFollowsTheSecret), keeping its last good
	// reading if the new one is broken; a pod rolled to read a broken file would not
	// start. (The suite rechecks servers every second: several passes run meanwhile.)
	hash, generation := sts.Spec.Template.Annotations[resources.AnnotationConfig], sts.Generation
	var users corev1.Secret
	get(t, ns, "auth-users", &users)
	users.Data["users"] = append(users.Data["users"], []byte("\nbob:$2y$10$abcdefghijklmnopqrstuuDCmUqMzDpFOe5YDz7L9dNaUv4ABQWnS")...)
	if err := k8s.Update(ctx, &users); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	get(t, ns, "auth-blue", &sts)
	if sts.Spec.Template.Annotations[resources.AnnotationConfig] != hash || sts.Generation != generation {
		t.Errorf("a change of the users Secret rolled the pods (config hash %s → %s, generation %d → %d)",
			hash, sts.Spec.Template.Annotations[resources.AnnotationConfig], generation, sts.Generation)
	}

	// 7. The signing key is due: a new one, the old one kept as previous, pods rolled.
	get(t, ns, "auth-keys", &keys)
	old := string(keys.Data[resources.KeySigningKey])
	keys.Annotations[resources.AnnotationKeyRotatedAt] = time.Now().Add(-91 * 24 * time.Hour).UTC().Format(time.RFC3339)
	if err := k8s.Update(ctx, &keys); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "key rotation", func() bool {
		get(t, ns, "auth-keys", &keys)
		return string(keys.Data[resources.KeyPreviousSigningKey]) == old && string(keys.Data[resources.KeySigningKey]) != old
	}, nil)
	eventually(t, 20*time.Second, "pods rolled for the new key", func() bool {
		get(t, ns, "auth-blue", &sts)
		for _, e := range sts.Spec.Template.Spec.Containers[0].Env {
			if e.Name == "KUBEOAUTH_PREVIOUS_SIGNING_KEY_FILE" {
				return true
			}
		}
		return false
	}, nil)

	// 8. spec.metrics.from: the metrics port admits Prometheus's namespace and the
	// operator's pods only.
	// A patch, not Get and Update: the operator writes the status meanwhile, and an
	// update from the object read before that is refused as a conflict.
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(ts), ts); err != nil {
		t.Fatal(err)
	}
	before := ts.DeepCopy()
	ts.Spec.Metrics = &oauthv1alpha1.MetricsAccess{From: []oauthv1alpha1.MetricsPeer{{NamespaceSelector: &oauthv1alpha1.PeerSelector{
		MatchLabels: map[string]oauthv1alpha1.LabelValue{corev1.LabelMetadataName: "monitoring"}}}}}
	if err := k8s.Patch(ctx, ts, client.MergeFrom(before)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the metrics port limited to spec.metrics.from and the operator", func() bool {
		get(t, ns, "auth-tokenserver", &serverPolicy)
		m := serverPolicy.Spec.Ingress[1]
		return m.Ports[0].Port.StrVal == "metrics" && len(m.From) == 2 &&
			m.From[0].PodSelector.MatchLabels["app.kubernetes.io/component"] == "manager" &&
			m.From[1].NamespaceSelector.MatchLabels[corev1.LabelMetadataName] == "monitoring"
	}, func() string { return fmt.Sprintf("%+v", serverPolicy.Spec.Ingress) })
}
