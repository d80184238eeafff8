package resources

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// Ports of the token server and its database.
const (
	PublicPort = 4444
	AdminPort  = 4445
	// MetricsPort serves /metrics, apart from the public port.
	MetricsPort  = 4446
	PostgresPort = 5432
)

// Labels and annotations on every object built here.
const (
	LabelName        = "app.kubernetes.io/name"
	LabelInstance    = "app.kubernetes.io/instance"
	LabelComponent   = "app.kubernetes.io/component"
	LabelManagedBy   = "app.kubernetes.io/managed-by"
	LabelColor       = "oauth.kubeoauth.io/color"
	AnnotationConfig = "oauth.kubeoauth.io/config-hash"
	// AnnotationKeyRotatedAt on the keys Secret says when the signing key was made.
	AnnotationKeyRotatedAt = "oauth.kubeoauth.io/signing-key-rotated-at"
	ManagedBy              = "kubeoauth"
	// ColorBlue is the first version's StatefulSet; an upgrade brings up green.
	ColorBlue  = "blue"
	ColorGreen = "green"
)

// Components (app.kubernetes.io/component) and port names.
const (
	componentServer     = "tokenserver"
	componentDatabase   = "database"
	componentMigrations = "migrations"
	// componentVerify is the upgrade's verification Job: the one peer besides the
	// operator that the admin port admits.
	componentVerify = "upgrade-verify"
	portHTTP        = "http"
	portAdmin       = "admin"
	portMetrics     = "metrics"
	portPostgres    = "postgres"
)

// Keys of the Secrets and ConfigMap built here. Key names, not credentials.
const (
	KeySigningKey         = "signing.pem"
	KeyPreviousSigningKey = "previous-signing.pem"
	KeyHMAC               = "hmac"
	KeyAdminToken         = "token"    // #nosec G101
	KeyPassword           = "password" // #nosec G101
	KeyDSN                = "dsn"
	KeyUsers              = "users"
	KeyScopes             = "scopes.json"
	// KeyUpstreamOIDC is the ConfigMap's key of the upstream provider's settings,
	// without its client secret; KeyUpstreamClientSecret is the client secret's
	// default key in the user's Secret and its file name in the pod.
	KeyUpstreamOIDC         = "upstream-oidc.json"
	KeyUpstreamClientSecret = "client_secret" // #nosec G101
	// KeyUpstreamCA is the upstream provider's CA certificates' default key and file.
	KeyUpstreamCA = "ca.crt"
	// The admin API's TLS Secret: the operator's CA for this server (ca.key never
	// leaves the Secret: the pods mount only tls.crt and tls.key) and the serving pair.
	KeyCACert  = "ca.crt"
	KeyCAKey   = "ca.key" // #nosec G101
	KeyTLSCert = "tls.crt"
	KeyTLSKey  = "tls.key" // #nosec G101
)

// The bundled database's role and database name.
const (
	DatabaseUser = "kubeoauth"
	DatabaseName = "kubeoauth"
)

// Mount paths inside the token server's container.
const (
	mountKeys  = "/etc/kubeoauth/keys"
	mountAdmin = "/etc/kubeoauth/admin"
	mountDB    = "/etc/kubeoauth/db"
	mountUsers = "/etc/kubeoauth/users"
	// mountUpstream holds the upstream provider's client secret alone.
	mountUpstream = "/etc/kubeoauth/upstream"
	// mountUpstreamCA holds the upstream provider's CA certificates, when given.
	mountUpstreamCA = "/etc/kubeoauth/upstream-ca"
	mountConfig     = "/etc/kubeoauth/config"
	mountTLS        = "/etc/kubeoauth/admin-tls"
	pgData          = "/var/lib/postgresql/data"
	// pgRun is where the postgres image keeps its socket and lock file, and pgTmp
	// its entrypoint's temporary files: both on the root file system, which is
	// read-only, so each gets an emptyDir.
	pgRun = "/var/run/postgresql"
	pgTmp = "/tmp"
)

// Users the pods run as. A kubelet mounts Secret volumes root-owned, so a
// non-root process reads them only through its group: every pod sets fsGroup,
// which makes the volumes' files group-owned by it and group-readable.
const (
	// ServerUID is the distroless image's nonroot user and group (our Dockerfile's
	// USER 65532:65532), for the token server and its migration Job.
	ServerUID int64 = 65532
	// PostgresUID is the postgres user and group of the official postgres image.
	PostgresUID int64 = 999
)

// Names of a TokenServer's objects: one place, so the reconciler, the builders and
// the docs agree. The naming rule of this package: a function that returns a name
// ends in Name (or Ref, for a Secret key reference); a function named after a kind
// (KeysSecret, PublicService, ...) builds the object.

// DatabaseObjectName names the bundled PostgreSQL's StatefulSet, Service and Secret.
// DefaultPostgresImage is the bundled database's image when the TokenServer names
// none (the CRD's default says the same): a patch release, not "postgres:15",
// which would be whatever 15.x each node pulled first.
const DefaultPostgresImage = "postgres:15.18"

func DatabaseObjectName(ts *oauthv1alpha1.TokenServer) string { return ts.Name + "-db" }

// KeysSecretName names the Secret of the signing keys and the HMAC secret.
func KeysSecretName(ts *oauthv1alpha1.TokenServer) string { return ts.Name + "-keys" }

// AdminObjectName names the admin token Secret and the admin Service.
func AdminObjectName(ts *oauthv1alpha1.TokenServer) string { return ts.Name + adminSuffix }

const adminSuffix = "-admin"

// ServerOfAdminService is the TokenServer whose admin Service is named svc (see
// AdminObjectName), and whether svc is one.
func ServerOfAdminService(svc string) (string, bool) { return strings.CutSuffix(svc, adminSuffix) }

// AdminTLSSecretName names the Secret of the admin API's CA and serving certificate.
func AdminTLSSecretName(ts *oauthv1alpha1.TokenServer) string { return ts.Name + "-admin-tls" }

// AdminServerName is the name the operator checks the admin API's certificate
// against: the admin Service's, whichever pod address it dials.
func AdminServerName(ts *oauthv1alpha1.TokenServer) string {
	return fmt.Sprintf("%s.%s.svc", AdminObjectName(ts), ts.Namespace)
}

// AdminDNSNames are the names the admin API's certificate holds: the Service's
// short and qualified names, for the operator and for people debugging from a pod.
func AdminDNSNames(ts *oauthv1alpha1.TokenServer) []string {
	return []string{AdminServerName(ts), AdminServerName(ts) + ".cluster.local", AdminObjectName(ts) + "." + ts.Namespace}
}

// ConfigMapName names the ConfigMap of the consent page's scope descriptions.
func ConfigMapName(ts *oauthv1alpha1.TokenServer) string { return ts.Name + "-config" }

// ServiceAccountName names the token server pods' ServiceAccount.
func ServiceAccountName(ts *oauthv1alpha1.TokenServer) string { return ts.Name + "-tokenserver" }

// StatefulSetName names the StatefulSet (and its headless Service) of one color.
func StatefulSetName(ts *oauthv1alpha1.TokenServer, color string) string {
	return ts.Name + "-" + color
}

// PublicServiceName names the Service clients and browsers reach; it is the TokenServer's name.
func PublicServiceName(ts *oauthv1alpha1.TokenServer) string { return ts.Name }

// MigrationJobName names the Job that migrates the database for image: a new image
// gets a new Job, the same image never migrates twice.
func MigrationJobName(ts *oauthv1alpha1.TokenServer, image string) string {
	sum := sha256.Sum256([]byte(image))
	return ts.Name + "-migrate-" + hex.EncodeToString(sum[:4])
}

// AdminEndpoint is the admin API's in-cluster URL, reported in status.
func AdminEndpoint(ts *oauthv1alpha1.TokenServer) string {
	return fmt.Sprintf("https://%s:%d", AdminServerName(ts), AdminPort)
}

// DSNSecretRef is the Secret and key holding the serving version's DSN:
// status.database once an upgrade with a copied database moved it (the copy), else
// SpecDSNSecretRef. Every pod and Job of the serving version, and the next
// upgrade's plan, use it.
func DSNSecretRef(ts *oauthv1alpha1.TokenServer) (name, key string) {
	if d := ts.Status.Database; d != nil && d.SecretName != "" {
		key = d.Key
		if key == "" {
			key = KeyDSN
		}
		return d.SecretName, key
	}
	return SpecDSNSecretRef(ts)
}

// SpecDSNSecretRef is the Secret and key of spec.database: the bundled database's
// generated one, or the user's (database.external).
func SpecDSNSecretRef(ts *oauthv1alpha1.TokenServer) (name, key string) {
	if db := ts.Spec.Database; db != nil && db.External != nil {
		key = db.External.SecretRef.Key
		if key == "" {
			key = KeyDSN
		}
		return db.External.SecretRef.Name, key
	}
	return DatabaseObjectName(ts), KeyDSN
}

// Managed says whether the operator runs the server (not spec.external).
func Managed(ts *oauthv1alpha1.TokenServer) bool { return ts.Spec.External == nil }

// ManagedDatabase says whether the operator runs the database too.
func ManagedDatabase(ts *oauthv1alpha1.TokenServer) bool {
	return Managed(ts) && ts.Spec.Database != nil && ts.Spec.Database.Managed != nil
}

func labels(ts *oauthv1alpha1.TokenServer, component string) map[string]string {
	return map[string]string{LabelName: "kubeoauth", LabelInstance: ts.Name, LabelComponent: component, LabelManagedBy: ManagedBy}
}

// VerifySelector selects an upgrade's verification Jobs and their pods.
func VerifySelector(ts *oauthv1alpha1.TokenServer) map[string]string {
	return map[string]string{LabelInstance: ts.Name, LabelComponent: componentVerify}
}

// ServerSelector selects the pods of one color: its StatefulSet's and headless
// Service's selector.
func ServerSelector(ts *oauthv1alpha1.TokenServer, color string) map[string]string {
	return map[string]string{LabelInstance: ts.Name, LabelComponent: componentServer, LabelColor: color}
}

// ServingSelector selects the pods that carry the serving label, whatever their
// color: the public and admin Services' selector. The operator moves the label pod
// by pod during an upgrade; no pod template carries it, so a new pod serves only
// once the operator says so.
func ServingSelector(ts *oauthv1alpha1.TokenServer) map[string]string {
	return map[string]string{LabelInstance: ts.Name, LabelComponent: componentServer, oauthv1alpha1.LabelServing: "true"}
}

// ServerPodSelector selects the token server pods of both colors.
func ServerPodSelector(ts *oauthv1alpha1.TokenServer) map[string]string {
	return map[string]string{LabelInstance: ts.Name, LabelComponent: componentServer}
}

func meta(ts *oauthv1alpha1.TokenServer, name, component string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: ts.Namespace, Labels: labels(ts, component)}
}

// DatabaseSecret holds the bundled database's password and the DSN built from it.
// The database is reached inside the cluster only, without TLS; use
// database.external for a database that needs it.
func DatabaseSecret(ts *oauthv1alpha1.TokenServer, password string) *corev1.Secret {
	dsn := url.URL{Scheme: "postgres", User: url.UserPassword(DatabaseUser, password),
		Host:     fmt.Sprintf("%s.%s.svc:%d", DatabaseObjectName(ts), ts.Namespace, PostgresPort),
		Path:     "/" + DatabaseName,
		RawQuery: "sslmode=disable"}
	return &corev1.Secret{ObjectMeta: meta(ts, DatabaseObjectName(ts), componentDatabase), Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{KeyPassword: []byte(password), KeyDSN: []byte(dsn.String())}}
}

// KeysSecret holds the signing key, the previous one (kept in the JWKS after a
// rotation) and the HMAC secret that signs opaque tokens; rotatedAt is RFC 3339.
func KeysSecret(ts *oauthv1alpha1.TokenServer, signing, previous, hmac []byte, rotatedAt string) *corev1.Secret {
	s := &corev1.Secret{ObjectMeta: meta(ts, KeysSecretName(ts), componentServer), Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{KeySigningKey: signing, KeyHMAC: hmac}}
	s.Annotations = map[string]string{AnnotationKeyRotatedAt: rotatedAt}
	if len(previous) > 0 {
		s.Data[KeyPreviousSigningKey] = previous
	}
	return s
}

// AdminSecret holds the admin API's bearer token.
func AdminSecret(ts *oauthv1alpha1.TokenServer, token string) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: meta(ts, AdminObjectName(ts), componentServer), Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{KeyAdminToken: []byte(token)}}
}

// AdminTLSSecret holds the admin API's CA (certificate and key) and its serving
// certificate and key, all PEM.
func AdminTLSSecret(ts *oauthv1alpha1.TokenServer, caCert, caKey, cert, key []byte) *corev1.Secret {
	return &corev1.Secret{ObjectMeta: meta(ts, AdminTLSSecretName(ts), componentServer), Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{KeyCACert: caCert, KeyCAKey: caKey, KeyTLSCert: cert, KeyTLSKey: key}}
}

// ConfigMap holds the consent page's scope descriptions as the JSON object the
// token server reads.
func ConfigMap(ts *oauthv1alpha1.TokenServer) *corev1.ConfigMap {
	scopes := map[string]string{}
	for _, d := range ts.Spec.ScopeDescriptions {
		scopes[string(d.Name)] = d.Description
	}
	data, _ := json.Marshal(scopes) // a map of strings always marshals
	cm := &corev1.ConfigMap{ObjectMeta: meta(ts, ConfigMapName(ts), componentServer), Data: map[string]string{KeyScopes: string(data)}}
	if u := upstreamOIDC(ts); u != nil {
		cm.Data[KeyUpstreamOIDC] = upstreamSettings(u)
	}
	return cm
}

func upstreamOIDC(ts *oauthv1alpha1.TokenServer) *oauthv1alpha1.UpstreamOIDC {
	if l := ts.Spec.Login; l != nil {
		return l.UpstreamOIDC
	}
	return nil
}

// upstreamSettings is the upstream provider's settings as the token server reads
// them (--upstream-oidc-file): everything but the client secret, which it mounts
// from the user's Secret, so that the secret is never copied into the ConfigMap.
func upstreamSettings(u *oauthv1alpha1.UpstreamOIDC) string {
	type claims struct {
		Username string `json:"username,omitempty"`
		Email    string `json:"email,omitempty"`
		Name     string `json:"name,omitempty"`
		Groups   string `json:"groups,omitempty"`
	}
	out := struct {
		Issuer              string   `json:"issuer"`
		ClientID            string   `json:"clientID"`
		Scopes              []string `json:"scopes,omitempty"`
		Claims              *claims  `json:"claims,omitempty"`
		AllowedGroups       []string `json:"allowedGroups,omitempty"`
		AllowedEmailDomains []string `json:"allowedEmailDomains,omitempty"`
		UsernamePrefix      string   `json:"usernamePrefix,omitempty"`
		GroupsPrefix        string   `json:"groupsPrefix,omitempty"`
		FetchAllow          []string `json:"fetchAllow,omitempty"`
		DisplayName         string   `json:"displayName,omitempty"`
	}{Issuer: string(u.Issuer), ClientID: u.ClientID, AllowedGroups: u.AllowedGroups,
		AllowedEmailDomains: u.AllowedEmailDomains, UsernamePrefix: u.UsernamePrefix,
		GroupsPrefix: u.GroupsPrefix, FetchAllow: u.FetchAllow, DisplayName: u.DisplayName}
	for _, sc := range u.Scopes {
		out.Scopes = append(out.Scopes, string(sc))
	}
	if c := u.Claims; c != nil {
		out.Claims = &claims{Username: c.Username, Email: c.Email, Name: c.Name, Groups: c.Groups}
	}
	data, _ := json.Marshal(out) // strings and lists of strings always marshal
	return string(data)
}

// UpstreamSecretRef names the Secret and key of the upstream provider's client
// secret; "" when the TokenServer has no upstream provider.
func UpstreamSecretRef(ts *oauthv1alpha1.TokenServer) (name, key string) {
	u := upstreamOIDC(ts)
	if u == nil {
		return "", ""
	}
	key = u.ClientSecretRef.Key
	if key == "" {
		key = KeyUpstreamClientSecret
	}
	return u.ClientSecretRef.Name, key
}

// UpstreamCARef names the Secret and key of the upstream provider's CA
// certificates; "" when there are none to add to the system's roots.
func UpstreamCARef(ts *oauthv1alpha1.TokenServer) (name, key string) {
	u := upstreamOIDC(ts)
	if u == nil || u.CASecretRef == nil {
		return "", ""
	}
	key = u.CASecretRef.Key
	if key == "" {
		key = KeyUpstreamCA
	}
	return u.CASecretRef.Name, key
}

// ServiceAccount of the token server pods. They need no Kubernetes API access, so
// the token is not mounted and no Role is bound.
func ServiceAccount(ts *oauthv1alpha1.TokenServer) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{ObjectMeta: meta(ts, ServiceAccountName(ts), componentServer),
		AutomountServiceAccountToken: ptr.To(false)}
}

// DatabaseService is the bundled database's headless Service (the StatefulSet's
// governing Service); the DSN names it.
func DatabaseService(ts *oauthv1alpha1.TokenServer) *corev1.Service {
	sel := map[string]string{LabelInstance: ts.Name, LabelComponent: componentDatabase}
	return &corev1.Service{ObjectMeta: meta(ts, DatabaseObjectName(ts), componentDatabase), Spec: corev1.ServiceSpec{
		ClusterIP: corev1.ClusterIPNone, Selector: sel, PublishNotReadyAddresses: false,
		Ports: []corev1.ServicePort{{Name: portPostgres, Port: PostgresPort, TargetPort: intstr.FromString(portPostgres)}}}}
}

// DatabaseStatefulSet runs the bundled PostgreSQL: one replica with a volume claim,
// the official image's environment (POSTGRES_USER, POSTGRES_DB, POSTGRES_PASSWORD,
// PGDATA) and pg_isready as readiness.
func DatabaseStatefulSet(ts *oauthv1alpha1.TokenServer) *appsv1.StatefulSet {
	db := ts.Spec.Database.Managed
	size := db.StorageSize
	if size.IsZero() {
		size = resource.MustParse("1Gi")
	}
	image := db.Image
	if image == "" {
		image = DefaultPostgresImage
	}
	sel := map[string]string{LabelInstance: ts.Name, LabelComponent: componentDatabase}
	podLabels := labels(ts, componentDatabase)
	probe := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{
		Command: []string{"pg_isready", "-h", "127.0.0.1", "-U", DatabaseUser, "-d", DatabaseName}}},
		PeriodSeconds: 2, TimeoutSeconds: 5}
	sts := &appsv1.StatefulSet{ObjectMeta: meta(ts, DatabaseObjectName(ts), componentDatabase), Spec: appsv1.StatefulSetSpec{
		Replicas: ptr.To[int32](1), ServiceName: DatabaseObjectName(ts),
		Selector: &metav1.LabelSelector{MatchLabels: sel},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: podLabels}, Spec: corev1.PodSpec{
			AutomountServiceAccountToken:  ptr.To(false),
			SecurityContext:               databasePodSecurity(),
			TerminationGracePeriodSeconds: ptr.To[int64](60),
			Containers: []corev1.Container{{
				Name: portPostgres, Image: image,
				Ports: []corev1.ContainerPort{{Name: portPostgres, ContainerPort: PostgresPort}},
				Env: []corev1.EnvVar{
					{Name: "POSTGRES_USER", Value: DatabaseUser},
					{Name: "POSTGRES_DB", Value: DatabaseName},
					{Name: "PGDATA", Value: pgData + "/pgdata"},
					{Name: "POSTGRES_PASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
						LocalObjectReference: corev1.LocalObjectReference{Name: DatabaseObjectName(ts)}, Key: KeyPassword}}},
				},
				VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: pgData},
					{Name: "run", MountPath: pgRun}, {Name: "tmp", MountPath: pgTmp}},
				ReadinessProbe:  probe,
				SecurityContext: restrictedReadOnly(),
			}},
			Volumes: []corev1.Volume{emptyDir("run"), emptyDir("tmp")},
		}},
		VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "data"},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				StorageClassName: db.StorageClassName,
				Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}}}}},
		// The claim outlives the StatefulSet: deleting a TokenServer never deletes its data.
		PersistentVolumeClaimRetentionPolicy: &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
			WhenDeleted: appsv1.RetainPersistentVolumeClaimRetentionPolicyType, WhenScaled: appsv1.RetainPersistentVolumeClaimRetentionPolicyType},
	}}
	// One replica: nothing to spread.
	withPodSettings(&sts.Spec.Template, db.Pod, DatabaseResources, nil)
	return sts
}

// podSecurity runs every container of a pod as uid, with uid as its group and
// fsGroup: the Pod Security Standard "restricted", and Secret volumes readable.
func podSecurity(uid int64) *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To(uid), RunAsGroup: ptr.To(uid),
		FSGroup: ptr.To(uid), SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
}

// databasePodSecurity is podSecurity as the postgres user. The kubelet changes the
// data volume's ownership only when its root is not the fsGroup's yet: a recursive
// change on every start would be slow on a large database and loosen the modes of
// its files (PostgreSQL wants its data directory 0700, which its entrypoint restores).
func databasePodSecurity() *corev1.PodSecurityContext {
	s := podSecurity(PostgresUID)
	s.FSGroupChangePolicy = ptr.To(corev1.FSGroupChangeOnRootMismatch)
	return s
}

// restrictedReadOnly is the container side of "restricted", with a read-only root
// file system: whatever a process writes goes to a volume.
func restrictedReadOnly() *corev1.SecurityContext {
	return &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
		Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
}

func emptyDir(name string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
}

// secretVolume mounts a Secret readable by its owner, root, and the pod's fsGroup
// (a kubelet gives the files that group): by the pod's process, by no one else.
func secretVolume(name, secret string, items ...corev1.KeyToPath) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName: secret, Items: items, DefaultMode: ptr.To[int32](0o440)}}}
}

// dsnVolume mounts the DSN as the file db/dsn, whichever Secret holds it.
func dsnVolume(ts *oauthv1alpha1.TokenServer) corev1.Volume {
	name, key := DSNSecretRef(ts)
	return secretVolume("db", name, corev1.KeyToPath{Key: key, Path: KeyDSN})
}

// colorDSNVolume is dsnVolume, or db's during a Copy upgrade, where each color
// has its own database.
func colorDSNVolume(ts *oauthv1alpha1.TokenServer, db *oauthv1alpha1.DatabaseRef) corev1.Volume {
	if db == nil || db.SecretName == "" {
		return dsnVolume(ts)
	}
	key := db.Key
	if key == "" {
		key = KeyDSN
	}
	return secretVolume("db", db.SecretName, corev1.KeyToPath{Key: key, Path: KeyDSN})
}

// MigrationJob runs `tokenserver migrate up` with image: the schema the server
// needs, before any of its pods starts. Migrations are idempotent and take an
// advisory lock, so a retried or repeated Job is harmless. It runs on the first
// install only: an upgrade migrates in steps (PlanJob, ExpandJob, ContractJob).
//
// Of the operator's Jobs it alone gets spec.jobs.ttlSecondsAfterFinished: the
// operator reads it only until the first StatefulSet exists, which it creates in
// the pass the Job's completion starts; should the Job go before that, it is made
// again and migrates nothing. An upgrade's Jobs are read for as long as the
// upgrade runs, and a missing one is made again: they have no TTL.
func MigrationJob(ts *oauthv1alpha1.TokenServer, image string) *batchv1.Job {
	job := databaseJob(ts, MigrationJobName(ts, image), image, 6, "migrate", "up")
	job.Spec.TTLSecondsAfterFinished = ts.Spec.Jobs.TTLSecondsAfterFinished
	return job
}

// PlanJob runs the new image's `tokenserver migrate plan` against the database: it
// changes nothing and reports, as its termination message, the JSON the operator
// reads (upgrade.PlanResult). Should it fail before writing one, the end of its log
// takes the message's place, so that the reason reaches status.
func PlanJob(ts *oauthv1alpha1.TokenServer, name, image string) *batchv1.Job {
	job := databaseJob(ts, name, image, 2, "migrate", "plan")
	job.Spec.Template.Spec.Containers[0].TerminationMessagePolicy = corev1.TerminationMessageFallbackToLogsOnError
	return job
}

// ExpandJob runs the new image's expand migrations only: the schema both versions
// run on. The end of a failed run's log is its termination message, which the
// operator quotes in status.upgrade (not just "BackoffLimitExceeded").
func ExpandJob(ts *oauthv1alpha1.TokenServer, name, image string) *batchv1.Job {
	job := databaseJob(ts, name, image, 6, "migrate", "up", "--expand-only")
	job.Spec.Template.Spec.Containers[0].TerminationMessagePolicy = corev1.TerminationMessageFallbackToLogsOnError
	return job
}

// ContractJob runs all remaining migrations, contract ones included, once the old
// version is gone for good; its failure is quoted as ExpandJob's.
func ContractJob(ts *oauthv1alpha1.TokenServer, name, image string) *batchv1.Job {
	job := databaseJob(ts, name, image, 6, "migrate", "up")
	job.Spec.Template.Spec.Containers[0].TerminationMessagePolicy = corev1.TerminationMessageFallbackToLogsOnError
	return job
}

// MigrationFailedExitCode is the exit code of `tokenserver migrate up` when
// PostgreSQL refused a migration in a way another run would meet again
// (postgres.ExitMigrationFailed): the Job fails at once rather than after its
// retries' back-off (minutes), which are for a database that could not be reached.
const MigrationFailedExitCode = 3

// databaseJob runs the token server image with args and the DSN, as a migrations
// pod (which the database's NetworkPolicy admits).
func databaseJob(ts *oauthv1alpha1.TokenServer, name, image string, backoff int32, args ...string) *batchv1.Job {
	job := &batchv1.Job{ObjectMeta: meta(ts, name, componentMigrations), Spec: batchv1.JobSpec{
		BackoffLimit: ptr.To(backoff),
		PodFailurePolicy: &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{{
			Action: batchv1.PodFailurePolicyActionFailJob,
			OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{ContainerName: ptr.To("migrate"),
				Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: []int32{MigrationFailedExitCode}}}}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels(ts, componentMigrations)}, Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever, ServiceAccountName: ServiceAccountName(ts),
			AutomountServiceAccountToken: ptr.To(false), SecurityContext: podSecurity(ServerUID),
			Containers: []corev1.Container{{Name: "migrate", Image: image, Args: args,
				Env:             []corev1.EnvVar{{Name: "KUBEOAUTH_DSN_FILE", Value: mountDB + "/" + KeyDSN}},
				VolumeMounts:    []corev1.VolumeMount{{Name: "db", MountPath: mountDB, ReadOnly: true}},
				SecurityContext: restrictedReadOnly()}},
			Volumes: []corev1.Volume{dsnVolume(ts)},
		}},
	}}
	jobPod(ts, &job.Spec.Template)
	return job
}

// VerifyJob runs the new image's `tokenserver verify` against the new color's pods
// (its headless Service), cross-checking tokens with the old color's: it issues,
// introspects, refreshes and revokes through the public port, and registers its
// test client through the admin port with the admin token, checking the admin
// certificate against the operator's CA under the admin Service's name. It mounts
// the admin token and the CA certificate only, never the CA's key. It is not
// retried: a verification that fails once rolls the upgrade back.
func VerifyJob(ts *oauthv1alpha1.TokenServer, name, image, toColor, fromColor string) *batchv1.Job {
	host := func(color string) string { return fmt.Sprintf("%s.%s.svc", StatefulSetName(ts, color), ts.Namespace) }
	args := []string{"verify",
		"--server", fmt.Sprintf("http://%s:%d", host(toColor), PublicPort),
		"--peer", fmt.Sprintf("http://%s:%d", host(fromColor), PublicPort),
		"--admin-url", fmt.Sprintf("https://%s:%d", host(toColor), AdminPort),
		"--admin-token-file", mountAdmin + "/" + KeyAdminToken,
		"--admin-ca-file", mountTLS + "/" + KeyCACert,
		"--admin-server-name", AdminServerName(ts),
		"--issuer", string(ts.Spec.Issuer),
		"--termination-log", corev1.TerminationMessagePathDefault,
	}
	job := &batchv1.Job{ObjectMeta: meta(ts, name, componentVerify), Spec: batchv1.JobSpec{
		BackoffLimit: ptr.To[int32](0),
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels(ts, componentVerify)}, Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever, ServiceAccountName: ServiceAccountName(ts),
			AutomountServiceAccountToken: ptr.To(false), SecurityContext: podSecurity(ServerUID),
			Containers: []corev1.Container{{Name: "verify", Image: image, Args: args,
				TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
				VolumeMounts: []corev1.VolumeMount{{Name: portAdmin, MountPath: mountAdmin, ReadOnly: true},
					{Name: "admin-ca", MountPath: mountTLS, ReadOnly: true}},
				SecurityContext: restrictedReadOnly()}},
			Volumes: []corev1.Volume{secretVolume(portAdmin, AdminObjectName(ts), corev1.KeyToPath{Key: KeyAdminToken, Path: KeyAdminToken}),
				secretVolume("admin-ca", AdminTLSSecretName(ts), corev1.KeyToPath{Key: KeyCACert, Path: KeyCACert})},
		}},
	}}
	jobPod(ts, &job.Spec.Template)
	return job
}

// Inputs are what the token server's StatefulSet needs beyond the TokenServer:
// facts the reconciler read from the cluster.
type Inputs struct {
	// Color of the StatefulSet: blue for the first version.
	Color string
	// Image the StatefulSet runs and its replicas: each color has its own during an
	// upgrade (internal/upgrade decides them).
	Image    string
	Replicas int32
	// HasPreviousKey: the keys Secret holds a previous signing key to publish.
	HasPreviousKey bool
	// ConfigHash changes when the keys, the admin token or the scope descriptions do:
	// the pods read those at start, so a change rolls them.
	ConfigHash string
	// Database is the DSN this color mounts during a Copy upgrade (its own
	// database); nil: DSNSecretRef.
	Database *oauthv1alpha1.DatabaseRef
	// PagesHash is the digest of the templates in PagesConfigMap.
	PagesHash string
}

// TokenServerStatefulSet runs the token server of one color.
func TokenServerStatefulSet(ts *oauthv1alpha1.TokenServer, in Inputs) *appsv1.StatefulSet {
	t := ts.Spec.Tokens
	env := []corev1.EnvVar{
		{Name: "KUBEOAUTH_ISSUER", Value: string(ts.Spec.Issuer)},
		{Name: "KUBEOAUTH_LISTEN", Value: fmt.Sprintf(":%d", PublicPort)},
		{Name: "KUBEOAUTH_ADMIN_LISTEN", Value: fmt.Sprintf(":%d", AdminPort)},
		{Name: "KUBEOAUTH_METRICS_LISTEN", Value: fmt.Sprintf(":%d", MetricsPort)},
		{Name: "KUBEOAUTH_DSN_FILE", Value: mountDB + "/" + KeyDSN},
		{Name: "KUBEOAUTH_ADMIN_TOKEN_FILE", Value: mountAdmin + "/" + KeyAdminToken},
		{Name: "KUBEOAUTH_ADMIN_TLS_CERT_FILE", Value: mountTLS + "/" + KeyTLSCert},
		{Name: "KUBEOAUTH_ADMIN_TLS_KEY_FILE", Value: mountTLS + "/" + KeyTLSKey},
		{Name: "KUBEOAUTH_SIGNING_KEY_FILE", Value: mountKeys + "/" + KeySigningKey},
		{Name: "KUBEOAUTH_HMAC_SECRET_FILE", Value: mountKeys + "/" + KeyHMAC},
		{Name: "KUBEOAUTH_SCOPE_DESCRIPTIONS_FILE", Value: mountConfig + "/" + KeyScopes},
	}
	if t.RequirePKCE != nil && !*t.RequirePKCE {
		env = append(env, corev1.EnvVar{Name: "KUBEOAUTH_REQUIRE_PKCE", Value: "false"})
	}
	if t.RequirePushedAuthorizationRequests {
		env = append(env, corev1.EnvVar{Name: "KUBEOAUTH_REQUIRE_PUSHED_AUTHORIZATION_REQUESTS", Value: "true"})
	}
	if in.HasPreviousKey {
		env = append(env, corev1.EnvVar{Name: "KUBEOAUTH_PREVIOUS_SIGNING_KEY_FILE", Value: mountKeys + "/" + KeyPreviousSigningKey})
	}
	for name, v := range map[string]string{
		"KUBEOAUTH_SIGNING_ALGORITHM":       t.SigningAlgorithm,
		"KUBEOAUTH_ACCESS_TOKEN_FORMAT":     t.AccessTokenFormat,
		"KUBEOAUTH_ACCESS_TOKEN_LIFESPAN":   string(t.AccessTokenLifespan),
		"KUBEOAUTH_REFRESH_TOKEN_LIFESPAN":  string(t.RefreshTokenLifespan),
		"KUBEOAUTH_ID_TOKEN_LIFESPAN":       string(t.IDTokenLifespan),
		"KUBEOAUTH_AUTHORIZE_CODE_LIFESPAN": string(t.AuthorizationCodeLifespan),
		"KUBEOAUTH_REFRESH_GRACE_PERIOD":    t.RefreshGracePeriod,
		"KUBEOAUTH_DEVICE_CODE_LIFESPAN":    string(t.DeviceCodeLifespan),
		"KUBEOAUTH_DEVICE_POLL_INTERVAL":    t.DevicePollInterval,
	} {
		if v != "" {
			env = append(env, corev1.EnvVar{Name: name, Value: v})
		}
	}
	mounts := []corev1.VolumeMount{
		{Name: "keys", MountPath: mountKeys, ReadOnly: true},
		{Name: portAdmin, MountPath: mountAdmin, ReadOnly: true},
		{Name: "db", MountPath: mountDB, ReadOnly: true},
		{Name: "config", MountPath: mountConfig, ReadOnly: true},
		{Name: "admin-tls", MountPath: mountTLS, ReadOnly: true},
	}
	volumes := []corev1.Volume{
		secretVolume("keys", KeysSecretName(ts)),
		secretVolume(portAdmin, AdminObjectName(ts)),
		colorDSNVolume(ts, in.Database),
		{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: ConfigMapName(ts)}}}},
		// Only the serving pair: the CA's key stays with the operator, so a compromised
		// pod cannot mint certificates the operator would trust.
		secretVolume("admin-tls", AdminTLSSecretName(ts), corev1.KeyToPath{Key: KeyTLSCert, Path: KeyTLSCert},
			corev1.KeyToPath{Key: KeyTLSKey, Path: KeyTLSKey}),
	}
	if l := ts.Spec.Login; l != nil && l.ClientIPHeader != "" {
		env = append(env, corev1.EnvVar{Name: "KUBEOAUTH_CLIENT_IP_HEADER", Value: l.ClientIPHeader},
			corev1.EnvVar{Name: "KUBEOAUTH_CLIENT_IP_TRUSTED_PROXIES", Value: strings.Join(l.TrustedProxies, ",")})
	}
	if l := ts.Spec.Login; l != nil && l.UsersSecretRef != nil {
		key := l.UsersSecretRef.Key
		if key == "" {
			key = KeyUsers
		}
		env = append(env, corev1.EnvVar{Name: "KUBEOAUTH_USERS_FILE", Value: mountUsers + "/" + KeyUsers})
		mounts = append(mounts, corev1.VolumeMount{Name: "users", MountPath: mountUsers, ReadOnly: true})
		volumes = append(volumes, secretVolume("users", l.UsersSecretRef.Name, corev1.KeyToPath{Key: key, Path: KeyUsers}))
	}
	if name, key := UpstreamSecretRef(ts); name != "" {
		env = append(env, corev1.EnvVar{Name: "KUBEOAUTH_UPSTREAM_OIDC_FILE", Value: mountConfig + "/" + KeyUpstreamOIDC},
			corev1.EnvVar{Name: "KUBEOAUTH_UPSTREAM_OIDC_CLIENT_SECRET_FILE", Value: mountUpstream + "/" + KeyUpstreamClientSecret})
		mounts = append(mounts, corev1.VolumeMount{Name: "upstream", MountPath: mountUpstream, ReadOnly: true})
		volumes = append(volumes, secretVolume("upstream", name, corev1.KeyToPath{Key: key, Path: KeyUpstreamClientSecret}))
	}
	if name, key := UpstreamCARef(ts); name != "" {
		env = append(env, corev1.EnvVar{Name: "KUBEOAUTH_UPSTREAM_OIDC_CA_FILE", Value: mountUpstreamCA + "/" + KeyUpstreamCA})
		mounts = append(mounts, corev1.VolumeMount{Name: "upstream-ca", MountPath: mountUpstreamCA, ReadOnly: true})
		volumes = append(volumes, secretVolume("upstream-ca", name, corev1.KeyToPath{Key: key, Path: KeyUpstreamCA}))
	}
	brandEnv, brandMounts, brandVolumes, podAnnotations := brandingPod(ts, in.PagesHash)
	env, mounts, volumes = append(env, brandEnv...), append(mounts, brandMounts...), append(volumes, brandVolumes...)
	// Sorted so that the same spec always builds the same StatefulSet: map order would
	// otherwise roll the pods on every pass.
	slices.SortFunc(env, func(a, b corev1.EnvVar) int { return strings.Compare(a.Name, b.Name) })
	httpGet := func(path string) corev1.ProbeHandler {
		return corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString(portHTTP)}}
	}
	podLabels := labels(ts, componentServer)
	podLabels[LabelColor] = in.Color
	sts := &appsv1.StatefulSet{ObjectMeta: meta(ts, StatefulSetName(ts, in.Color), componentServer), Spec: appsv1.StatefulSetSpec{
		Replicas:    ptr.To(in.Replicas),
		ServiceName: StatefulSetName(ts, in.Color),
		// Every replica is alike and keeps no state: start and stop them all at once.
		PodManagementPolicy: appsv1.ParallelPodManagement,
		Selector:            &metav1.LabelSelector{MatchLabels: ServerSelector(ts, in.Color)},
		Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: withAnnotation(podAnnotations, AnnotationConfig, in.ConfigHash)},
			Spec: corev1.PodSpec{
				ServiceAccountName: ServiceAccountName(ts), AutomountServiceAccountToken: ptr.To(false),
				SecurityContext: podSecurity(ServerUID), TerminationGracePeriodSeconds: ptr.To[int64](30),
				Containers: []corev1.Container{{
					Name: componentServer, Image: in.Image, Args: []string{"serve"}, Env: env, VolumeMounts: mounts,
					Ports: []corev1.ContainerPort{{Name: portHTTP, ContainerPort: PublicPort}, {Name: portAdmin, ContainerPort: AdminPort},
						{Name: portMetrics, ContainerPort: MetricsPort}},
					// Ready only with the database reachable (/readyz pings it); alive as long
					// as the process answers, so a database outage does not restart every pod.
					ReadinessProbe:  &corev1.Probe{ProbeHandler: httpGet("/readyz"), PeriodSeconds: 2, FailureThreshold: 2},
					LivenessProbe:   &corev1.Probe{ProbeHandler: httpGet("/healthz"), PeriodSeconds: 10, FailureThreshold: 3},
					SecurityContext: restrictedReadOnly(),
				}},
				Volumes: volumes,
			},
		},
	}}
	withPodSettings(&sts.Spec.Template, ts.Spec.Pod, ServerResources, spreadAcrossNodes(ServerSelector(ts, in.Color)))
	return sts
}

// HeadlessService governs the StatefulSet of one color: stable pod names, and a
// way to reach one color directly during an upgrade.
func HeadlessService(ts *oauthv1alpha1.TokenServer, color string) *corev1.Service {
	return &corev1.Service{ObjectMeta: meta(ts, StatefulSetName(ts, color), componentServer), Spec: corev1.ServiceSpec{
		ClusterIP: corev1.ClusterIPNone, Selector: ServerSelector(ts, color),
		Ports: []corev1.ServicePort{{Name: portHTTP, Port: PublicPort, TargetPort: intstr.FromString(portHTTP)},
			{Name: portAdmin, Port: AdminPort, TargetPort: intstr.FromString(portAdmin)},
			{Name: portMetrics, Port: MetricsPort, TargetPort: intstr.FromString(portMetrics)}}}}
}

// PublicService is what clients and browsers reach (behind an Ingress or Gateway
// that serves the issuer URL), port 80, selecting with selector: ServingSelector, or
// ServerSelector of the active color on an install made before the serving label,
// until its pods carry it.
func PublicService(ts *oauthv1alpha1.TokenServer, selector map[string]string) *corev1.Service {
	return &corev1.Service{ObjectMeta: meta(ts, PublicServiceName(ts), componentServer), Spec: corev1.ServiceSpec{
		Selector: selector,
		Ports:    []corev1.ServicePort{{Name: portHTTP, Port: 80, TargetPort: intstr.FromString(portHTTP)}}}}
}

// AdminService is what the operator reaches: the admin API of the serving pods,
// selected as PublicService's. Keep it inside the cluster; it is authenticated by
// the admin token only.
func AdminService(ts *oauthv1alpha1.TokenServer, selector map[string]string) *corev1.Service {
	return &corev1.Service{ObjectMeta: meta(ts, AdminObjectName(ts), componentServer), Spec: corev1.ServiceSpec{
		Selector: selector,
		Ports:    []corev1.ServicePort{{Name: portAdmin, Port: AdminPort, TargetPort: intstr.FromString(portAdmin)}}}}
}

// PodDisruptionBudget lets a drain take one token server pod at a time.
func PodDisruptionBudget(ts *oauthv1alpha1.TokenServer) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{ObjectMeta: meta(ts, ts.Name, componentServer), Spec: policyv1.PodDisruptionBudgetSpec{
		MaxUnavailable: ptr.To(intstr.FromInt32(1)),
		Selector:       &metav1.LabelSelector{MatchLabels: map[string]string{LabelInstance: ts.Name, LabelComponent: componentServer}}}}
}

// OperatorPeer is where the operator's pods run: the only peers the admin port admits.
type OperatorPeer struct {
	Namespace string
	PodLabels map[string]string
}

// ServerNetworkPolicy admits anyone to the token server's public port; to its metrics
// port the peers of spec.metrics.from and the operator's pods (which read the new
// color's metrics during a promotion), or anyone when spec.metrics.from is empty; and
// to its admin port only the operator's pods and this server's upgrade verification
// Job. It selects the pods of every color, so an upgrade's new pods are covered
// before they serve.
func ServerNetworkPolicy(ts *oauthv1alpha1.TokenServer, op OperatorPeer) *networkingv1.NetworkPolicy {
	port := func(name string) []networkingv1.NetworkPolicyPort {
		return []networkingv1.NetworkPolicyPort{{Port: ptr.To(intstr.FromString(name))}}
	}
	operator := networkingv1.NetworkPolicyPeer{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{corev1.LabelMetadataName: op.Namespace}},
		PodSelector:       &metav1.LabelSelector{MatchLabels: op.PodLabels}}
	// The metrics port, where the server has one (a named port the pod lacks matches
	// nothing). No From: every source.
	metrics := networkingv1.NetworkPolicyIngressRule{Ports: port(portMetrics)}
	if m := ts.Spec.Metrics; m != nil && len(m.From) > 0 {
		metrics.From = []networkingv1.NetworkPolicyPeer{operator}
		for _, p := range m.From {
			metrics.From = append(metrics.From, networkPolicyPeer(p))
		}
	}
	return &networkingv1.NetworkPolicy{ObjectMeta: meta(ts, ts.Name+"-tokenserver", componentServer), Spec: networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{LabelInstance: ts.Name, LabelComponent: componentServer}},
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		Ingress: []networkingv1.NetworkPolicyIngressRule{
			{Ports: port(portHTTP)}, // no From: every source
			metrics,
			{Ports: port(portAdmin), From: []networkingv1.NetworkPolicyPeer{operator,
				// No namespace selector: this namespace's verification pods of this server.
				{PodSelector: &metav1.LabelSelector{MatchLabels: VerifySelector(ts)}}}},
		},
	}}
}

// networkPolicyPeer is p as a NetworkPolicy has it: the same fields.
func networkPolicyPeer(p oauthv1alpha1.MetricsPeer) networkingv1.NetworkPolicyPeer {
	out := networkingv1.NetworkPolicyPeer{PodSelector: labelSelector(p.PodSelector), NamespaceSelector: labelSelector(p.NamespaceSelector)}
	if b := p.IPBlock; b != nil {
		out.IPBlock = &networkingv1.IPBlock{CIDR: b.CIDR, Except: slices.Clone(b.Except)}
	}
	return out
}

// DatabaseNetworkPolicy admits only this TokenServer's token server, migrations
// (the upgrade's Jobs among them) and replay pods to the bundled PostgreSQL.
func DatabaseNetworkPolicy(ts *oauthv1alpha1.TokenServer) *networkingv1.NetworkPolicy {
	return &networkingv1.NetworkPolicy{ObjectMeta: meta(ts, DatabaseObjectName(ts), componentDatabase), Spec: networkingv1.NetworkPolicySpec{
		PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{LabelInstance: ts.Name, LabelComponent: componentDatabase}},
		PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
		Ingress: []networkingv1.NetworkPolicyIngressRule{{
			Ports: []networkingv1.NetworkPolicyPort{{Port: ptr.To(intstr.FromString(portPostgres))}},
			From: []networkingv1.NetworkPolicyPeer{{PodSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{LabelInstance: ts.Name},
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: LabelComponent, Operator: metav1.LabelSelectorOpIn,
					Values: []string{componentServer, componentMigrations, componentReplay}}}}}},
		}},
	}}
}
