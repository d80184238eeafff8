// Command demo is `make demo`, the README's first command: it starts the local cluster
// (hack/localcluster), installs the operator with its Helm chart, creates a TokenServer
// with a bundled PostgreSQL, applies OAuthClients and a ConsentGrant, and then shows,
// with the commands a user would type, a client_credentials token issued and
// introspected with the credentials the operator generated, the discovery document,
// and a ConsentGrant deleted with kubectl revoking its token. The cluster stays up for
// exploring; `make demo-down` stops it.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/kubeoauth/kubeoauth/internal/localcluster"
)

// demo holds the tools the demo runs and where it writes.
type demo struct {
	out                     io.Writer
	kubectl, helm, cluster  string
	assets, dir, kubeconfig string
	repo                    string
	alicePassword, work     string
	issuer                  string
	webapp                  [3]string // client ID, secret and alice's access token
}

func main() {
	d := &demo{out: os.Stdout}
	flag.StringVar(&d.kubectl, "kubectl", "kubectl", "kubectl of the cluster's version")
	flag.StringVar(&d.helm, "helm", "helm", "helm")
	flag.StringVar(&d.cluster, "localcluster", "bin/localcluster", "the local-cluster tool")
	flag.StringVar(&d.assets, "assets", os.Getenv("KUBEBUILDER_ASSETS"), "the control-plane binaries")
	flag.StringVar(&d.dir, "dir", localcluster.DefaultDir(), "the local cluster's directory")
	flag.Parse()
	if err := d.run(context.Background()); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\nlogs: %s (control plane, node), %s (pods: kubectl logs)\n"+
			"stop the cluster with: make demo-down\n", err, filepath.Join(d.dir, "logs"), filepath.Join(d.dir, "node", "pods"))
		os.Exit(1)
	}
}

// Namespaces and names of the demo's objects.
const (
	platformNS = "platform"
	appsNS     = "apps"
	server     = "auth"
	localPort  = "4444"
)

func (d *demo) run(ctx context.Context) error {
	var err error
	if d.repo, err = filepath.Abs("."); err != nil {
		return err
	}
	if d.work, err = os.MkdirTemp("", "kubeoauth-demo-"); err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(d.work) }()
	d.kubeconfig = localcluster.AdminKubeconfig(d.dir)
	d.issuer = "http://127.0.0.1:" + localPort
	steps := []struct {
		title string
		do    func(context.Context) error
	}{
		{"Start the local cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and a node whose pods are processes", d.up},
		{"Install the operator with its Helm chart; it runs as a pod on the node", d.installOperator},
		{"Create a TokenServer with a bundled PostgreSQL, and who may sign in", d.createServer},
		{"Register two apps: a backend job (client_credentials) and a web app (authorization code)", d.createClients},
		{"A client_credentials token with the credentials from the generated Secret", d.clientCredentials},
		{"The discovery document", d.discovery},
		{"Alice signs in to the web app; her ConsentGrant means no consent page", d.signIn},
		{"Delete the ConsentGrant with kubectl: its token is revoked", d.revoke},
	}
	for i, s := range steps {
		say(d.out, "\n\033[1m==> [%d/%d] %s\033[0m\n", i+1, len(steps), s.title)
		start := time.Now()
		if err := s.do(ctx); err != nil {
			if i > 0 { // the cluster is up: show what it looks like
				d.diagnose()
			}
			return fmt.Errorf("step %d (%s): %w", i+1, s.title, err)
		}
		say(d.out, "    (%.1fs)\n", time.Since(start).Seconds())
	}
	d.finish()
	return nil
}

// diagnose prints the state a failed step leaves: the product's objects with their
// conditions, pods that are not ready, recent events and the operator's last lines,
// so that a failure in CI says why without a re-run (the cluster's files are gone
// once the test that ran the demo cleans up).
func (d *demo) diagnose() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	say(d.out, "\n\033[1m==> What the cluster looks like\033[0m\n")
	for _, args := range [][]string{
		{"get", "tokenservers,oauthclients,consentgrants,statefulsets,jobs,pods", "-A", "-o", "wide"},
		{"get", "tokenservers,oauthclients,consentgrants", "-A", "-o",
			`custom-columns=KIND:.kind,NS:.metadata.namespace,NAME:.metadata.name,CONDITIONS:.status.conditions[*].message`},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
		{"-n", "kubeoauth-system", "logs", "-l", "app.kubernetes.io/name=kubeoauth", "--tail=60"},
	} {
		_ = d.kube(ctx, args...)
	}
	pods, err := d.output(ctx, d.kubectl, "get", "pods", "-A", "-o",
		`jsonpath={range .items[?(@.status.phase!="Succeeded")]}{.metadata.namespace}/{.metadata.name}{"\n"}{end}`)
	if err != nil {
		return
	}
	for _, p := range strings.Fields(pods) {
		ns, name, _ := strings.Cut(p, "/")
		if ns == platformNS {
			_ = d.kube(ctx, "-n", ns, "logs", name, "--all-containers", "--tail=30")
		}
	}
}

func (d *demo) up(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, d.cluster, "up", "--dir", d.dir, "--assets", d.assets) // #nosec G204 -- our tool
	cmd.Stdout, cmd.Stderr = d.out, d.out
	return cmd.Run()
}

func (d *demo) installOperator(ctx context.Context) error {
	return d.show(ctx, d.helm, "upgrade", "--install", "kubeoauth", "charts/kubeoauth", "--namespace", "kubeoauth-system",
		"--create-namespace", "--wait", "--timeout", "3m")
}

func (d *demo) createServer(ctx context.Context) error {
	hash, err := d.alice()
	if err != nil {
		return err
	}
	if err := d.apply(ctx, namespaces); err != nil {
		return err
	}
	say(d.out, "# who may sign in: username:bcrypt-hash lines\n")
	users := fmt.Sprintf(usersSecret, base64.StdEncoding.EncodeToString([]byte("alice:"+hash+"\n")))
	if err := d.apply(ctx, users); err != nil {
		return err
	}
	if err := d.apply(ctx, fmt.Sprintf(tokenServer, d.issuer)); err != nil {
		return err
	}
	say(d.out, "    the operator creates the database StatefulSet, keys, a migrations Job and the server StatefulSet...\n")
	if err := d.kube(ctx, "-n", platformNS, "wait", "--for=condition=Ready", "tokenserver/"+server, "--timeout=4m"); err != nil {
		return err
	}
	return d.kube(ctx, "-n", platformNS, "get", "tokenservers,statefulsets,pods,pvc,jobs")
}

// alice's password and its bcrypt hash are made once per cluster and kept with it:
// a new hash (bcrypt salts each) would change the users Secret on every run of the
// demo, and the operator would roll the token server to read it.
func (d *demo) alice() (hash string, err error) {
	pwPath, hashPath := filepath.Join(d.dir, "demo-alice-password"), filepath.Join(d.dir, "demo-alice-bcrypt")
	pw, err1 := os.ReadFile(pwPath)  // #nosec G304 -- the cluster's directory
	h, err2 := os.ReadFile(hashPath) // #nosec G304 -- the cluster's directory
	if err1 == nil && err2 == nil {
		d.alicePassword = strings.TrimSpace(string(pw))
		return strings.TrimSpace(string(h)), nil
	}
	raw := make([]byte, 12)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	d.alicePassword = base64.RawURLEncoding.EncodeToString(raw)
	b, err := bcrypt.GenerateFromPassword([]byte(d.alicePassword), bcrypt.DefaultCost)
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(pwPath, []byte(d.alicePassword), 0o600); err != nil {
		return "", err
	}
	return string(b), os.WriteFile(hashPath, b, 0o600)
}

func decodeBase64(s string) (string, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	return string(b), err
}

func (d *demo) createClients(ctx context.Context) error {
	if err := d.apply(ctx, clients); err != nil {
		return err
	}
	if err := d.kube(ctx, "-n", appsNS, "wait", "--for=condition=Ready", "oauthclient/reports", "oauthclient/webapp",
		"consentgrant/webapp-alice", "--timeout=2m"); err != nil {
		return err
	}
	if err := d.kube(ctx, "get", "oauthclients,consentgrants", "-n", appsNS); err != nil {
		return err
	}
	// The host reaches the token server's Service through a port-forward that follows
	// its ready endpoints (there is no kube-proxy on the local cluster).
	cmd := exec.CommandContext(ctx, d.cluster, "port-forward", "--dir", d.dir, "--background", "-n", platformNS, // #nosec G204 -- our tool
		"svc/"+server, localPort+":80")
	cmd.Stdout, cmd.Stderr = d.out, d.out
	say(d.out, "$ localcluster port-forward -n %s svc/%s %s:80 &\n", platformNS, server, localPort)
	return cmd.Run()
}

func (d *demo) clientCredentials(ctx context.Context) error {
	id, err := d.secretValue(ctx, "reports-oauth", "client_id")
	if err != nil {
		return err
	}
	secret, err := d.secretValue(ctx, "reports-oauth", "client_secret")
	if err != nil {
		return err
	}
	tok, err := d.curlJSON(ctx, "access_token", "-u", id+":"+secret, "-d", "grant_type=client_credentials",
		"-d", "scope=reports.read", d.issuer+"/oauth2/token")
	if err != nil {
		return err
	}
	active, err := d.introspect(ctx, id, secret, tok)
	if err != nil {
		return err
	}
	if !strings.Contains(active, `"active":true`) {
		return errors.New("the new token is not active: " + active)
	}
	return nil
}

func (d *demo) discovery(ctx context.Context) error {
	return d.curl(ctx, d.issuer+"/.well-known/openid-configuration")
}

func (d *demo) finish() {
	say(d.out, `
==> Done. The cluster keeps running for you to explore:
    export KUBECONFIG=%s
    kubectl get tokenservers,oauthclients,consentgrants -A
    kubectl -n %s get pods -o wide
    kubectl -n kubeoauth-system logs deploy/kubeoauth-manager

    In a browser on this machine, open %s/account and sign in as alice
    (password %s): the connected-apps page lists what she granted.

    Stop everything with: make demo-down
`, d.kubeconfig, platformNS, d.issuer, d.alicePassword)
}

func say(w io.Writer, format string, a ...any) { _, _ = fmt.Fprintf(w, format, a...) }
