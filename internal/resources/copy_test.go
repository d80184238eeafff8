package resources

import (
	"reflect"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	klabels "k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

func TestCopyDSN(t *testing.T) {
	tests := map[string]struct {
		bundled, want string
	}{
		"the bundled DSN": {"postgres://kubeoauth:p%40ss@auth-db.platform.svc:5432/kubeoauth?sslmode=disable",
			"postgres://kubeoauth:p%40ss@auth-db.platform.svc:5432/kubeoauth_0badc0de?sslmode=disable"},
		"an earlier copy's DSN": {"postgres://kubeoauth:pw@auth-db.platform.svc:5432/kubeoauth_1a2b3c4d?sslmode=disable",
			"postgres://kubeoauth:pw@auth-db.platform.svc:5432/kubeoauth_0badc0de?sslmode=disable"},
		"not a URL": {"host=auth-db dbname=kubeoauth", ""},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := CopyDSN(tt.bundled, "0badc0de")
			if got != tt.want || (err != nil) != (tt.want == "") {
				t.Fatalf("CopyDSN = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	s, err := CopyTargetSecret(server(), "auth-0badc0de-db", "postgres://kubeoauth:pw@auth-db.platform.svc:5432/kubeoauth", "0badc0de")
	if err != nil || s.Name != "auth-0badc0de-db" || s.Namespace != "platform" ||
		string(s.Data[KeyDSN]) != "postgres://kubeoauth:pw@auth-db.platform.svc:5432/kubeoauth_0badc0de" {
		t.Fatalf("CopyTargetSecret = %+v, %v", s, err)
	}
}

// TestCopyObjects: each object of a Copy upgrade runs the new image's `db` command
// with the flags COPY14.md fixes, both DSNs mounted from their own Secrets, as pods
// the bundled database admits.
func TestCopyObjects(t *testing.T) {
	ts := server()
	blue := oauthv1alpha1.DatabaseRef{SecretName: "auth-db", Key: "dsn"}
	copyDB := oauthv1alpha1.DatabaseRef{SecretName: "auth-0badc0de-db", Key: "dsn"}
	replay := ReplayDeployment(ts, "auth-0badc0de-replay", "tokenserver:v2", "0badc0de", "forward", blue, copyDB)
	tests := map[string]struct {
		pod      corev1.PodSpec
		args     []string
		secrets  map[string]string // Secret name: the volume it is mounted as
		failFast []int32
	}{
		"copy": {pod: CopyJob(ts, "auth-0badc0de-copy", "tokenserver:v2", "0badc0de", ColorURL(ts, ColorBlue), blue, copyDB).Spec.Template.Spec,
			args: []string{"db", "copy", "--source-dsn-file", "/etc/kubeoauth/source/dsn", "--target-dsn-file", "/etc/kubeoauth/target/dsn",
				"--upgrade-id", "0badc0de", "--forward-to", "http://auth-blue.platform.svc:4444", "--create-database",
				"--termination-log", "/dev/termination-log"},
			secrets: map[string]string{"auth-db": "source", "auth-0badc0de-db": "target"}},
		"cutover": {pod: CutoverJob(ts, "auth-0badc0de-cutover", "tokenserver:v2", "0badc0de", "forward", ColorURL(ts, ColorGreen), blue, copyDB).Spec.Template.Spec,
			args: []string{"db", "cutover", "--from-dsn-file", "/etc/kubeoauth/source/dsn", "--to-dsn-file", "/etc/kubeoauth/target/dsn",
				"--upgrade-id", "0badc0de", "--direction", "forward", "--forward-to", "http://auth-green.platform.svc:4444", "--lease", "5s",
				"--termination-log", "/dev/termination-log"},
			secrets: map[string]string{"auth-db": "source", "auth-0badc0de-db": "target"}},
		"cutback": {pod: CutoverJob(server(func(ts *oauthv1alpha1.TokenServer) { ts.Spec.Upgrade.Copy.FenceLease = "2s" }),
			"auth-0badc0de-cutback", "tokenserver:v2", "0badc0de", "backward", ColorURL(ts, ColorBlue), copyDB, blue).Spec.Template.Spec,
			args: []string{"db", "cutover", "--from-dsn-file", "/etc/kubeoauth/source/dsn", "--to-dsn-file", "/etc/kubeoauth/target/dsn",
				"--upgrade-id", "0badc0de", "--direction", "backward", "--forward-to", "http://auth-blue.platform.svc:4444", "--lease", "2s",
				"--termination-log", "/dev/termination-log"},
			secrets: map[string]string{"auth-0badc0de-db": "source", "auth-db": "target"}},
		"cleanup after a rollback": {pod: CleanupJob(ts, "auth-0badc0de-cleanup", "tokenserver:v2", blue, "kubeoauth_0badc0de").Spec.Template.Spec,
			args: []string{"db", "cleanup", "--dsn-file", "/etc/kubeoauth/db/dsn", "--lock-timeout", "2s",
				"--drop-database", "kubeoauth_0badc0de"},
			secrets: map[string]string{"auth-db": "db"}},
		"cleanup of the copy that serves": {pod: CleanupJob(ts, "auth-0badc0de-cleanup", "tokenserver:v2", copyDB, "").Spec.Template.Spec,
			args:    []string{"db", "cleanup", "--dsn-file", "/etc/kubeoauth/db/dsn", "--lock-timeout", "2s"},
			secrets: map[string]string{"auth-0badc0de-db": "db"}},
		"replay": {pod: replay.Spec.Template.Spec,
			args: []string{"db", "replay", "--source-dsn-file", "/etc/kubeoauth/source/dsn", "--target-dsn-file", "/etc/kubeoauth/target/dsn",
				"--upgrade-id", "0badc0de", "--direction", "forward", "--metrics-address", ":4446"},
			secrets: map[string]string{"auth-db": "source", "auth-0badc0de-db": "target"}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			c := tt.pod.Containers[0]
			if c.Image != "tokenserver:v2" || !slices.Equal(c.Args, tt.args) {
				t.Errorf("runs %s %v, want %v", c.Image, c.Args, tt.args)
			}
			got := map[string]string{}
			for _, v := range tt.pod.Volumes {
				if v.Secret.Items[0].Path != KeyDSN || v.Secret.Items[0].Key != "dsn" {
					t.Errorf("volume %s mounts %+v", v.Name, v.Secret.Items)
				}
				got[v.Secret.SecretName] = v.Name
			}
			if !reflect.DeepEqual(got, tt.secrets) {
				t.Errorf("mounts %v, want %v", got, tt.secrets)
			}
			if *tt.pod.AutomountServiceAccountToken {
				t.Error("no API token needed")
			}
		})
	}
	// The cleanup: retried, bounded, reading only the DSN's Secret under the key given.
	cl := CleanupJob(ts, "c", "i", oauthv1alpha1.DatabaseRef{SecretName: "pg-v2", Key: "uri"}, "")
	if ptr.Deref(cl.Spec.BackoffLimit, 0) != 6 || ptr.Deref(cl.Spec.ActiveDeadlineSeconds, 0) <= 0 ||
		cl.Spec.Template.Spec.Volumes[0].Secret.Items[0].Key != "uri" || len(cl.Spec.Template.Spec.Volumes) != 1 {
		t.Errorf("cleanup Job %+v", cl.Spec)
	}
	// A lease that ran out fails the cutover Job at once: the operator decides.
	rules := CutoverJob(ts, "c", "i", "0badc0de", "forward", "u", blue, copyDB).Spec.PodFailurePolicy.Rules
	if len(rules) != 1 || !slices.Contains(rules[0].OnExitCodes.Values, CutoverLeaseExpiredExitCode) {
		t.Errorf("cutover pod failure policy %+v", rules)
	}
	// An external database's copy creates no database: the user made it.
	ext := server(func(ts *oauthv1alpha1.TokenServer) {
		ts.Spec.Database = &oauthv1alpha1.DatabaseSpec{External: &oauthv1alpha1.ExternalDatabase{SecretRef: oauthv1alpha1.SecretKeyReference{Name: "pg"}}}
	})
	if args := CopyJob(ext, "c", "i", "0badc0de", "http://b", blue, copyDB).Spec.Template.Spec.Containers[0].Args; slices.Contains(args, "--create-database") {
		t.Errorf("external copy runs %v", args)
	}
	// The replay: one replica, its metrics on the named port the operator scrapes,
	// ready once a pass succeeded, and admitted to the bundled database.
	c := replay.Spec.Template.Spec.Containers[0]
	if ptr.Deref(replay.Spec.Replicas, 0) != 1 || c.Ports[0].Name != "metrics" || c.Ports[0].ContainerPort != MetricsPort ||
		c.ReadinessProbe.HTTPGet.Path != "/readyz" || c.ReadinessProbe.HTTPGet.Port.StrVal != "metrics" {
		t.Errorf("replay Deployment %+v", replay.Spec)
	}
	if !klabels.SelectorFromSet(replay.Spec.Selector.MatchLabels).Matches(klabels.Set(replay.Spec.Template.Labels)) {
		t.Error("the replay Deployment's selector does not select its pods")
	}
	peer := DatabaseNetworkPolicy(ts).Spec.Ingress[0].From[0].PodSelector
	sel, err := metav1.LabelSelectorAsSelector(peer)
	if err != nil || !sel.Matches(klabels.Set(replay.Spec.Template.Labels)) {
		t.Errorf("the bundled database does not admit the replay's pods (%v)", err)
	}
	// Each color mounts the database it is given during a Copy upgrade.
	sts := TokenServerStatefulSet(ts, Inputs{Color: ColorGreen, Image: "tokenserver:v2", Database: &copyDB})
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if v.Name == "db" && v.Secret.SecretName != "auth-0badc0de-db" {
			t.Errorf("green mounts %s, want the copy", v.Secret.SecretName)
		}
	}
}

// A cutover or cut back Job runs for a bounded time: one whose pod never starts, or
// a run stuck after its marker, fails instead of holding the upgrade in
// CuttingOver; the operator then starts it again, and a rerun resumes.
func TestCutoverJobIsBounded(t *testing.T) {
	ts := server()
	db := oauthv1alpha1.DatabaseRef{SecretName: "auth-db", Key: "dsn"}
	j := CutoverJob(ts, "auth-0badc0de-cutover", "tokenserver:v2", "0badc0de", "forward", ColorURL(ts, ColorGreen), db, db)
	if d := j.Spec.ActiveDeadlineSeconds; d == nil || *d < 60 {
		t.Errorf("activeDeadlineSeconds %v; want a bound of at least a minute", d)
	}
}
