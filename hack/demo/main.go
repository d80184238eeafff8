// Command demo shows kubeoauth's API on a real kube-apiserver: it starts one (with etcd,
// built from source by hack/control-plane.sh), installs the CRDs, applies the samples
// with kubectl, lists them with their printer columns, shows the API server refusing a
// bad OAuthClient with messages that name the field, and stops everything it started.
//
// `make demo` runs it. The full demo — operator, token server and PostgreSQL on a local
// cluster, tokens issued and revoked — replaces it with the local-cluster issue.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

func main() {
	if err := run(context.Background(), os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

// badClient breaks three rules at once: a plain-http redirect URI off loopback, a
// public client asking for client_credentials, and a logo that is not a web URL.
const badClient = `apiVersion: oauth.kubeoauth.io/v1alpha1
kind: OAuthClient
metadata: {name: sloppy, namespace: observability}
spec:
  serverRef: {name: auth, namespace: platform}
  clientName: Sloppy
  grantTypes: [authorization_code, client_credentials]
  redirectURIs: [http://sloppy.example.com/callback]
  logoURI: ftp://sloppy.example.com/logo.png
  tokenEndpointAuthMethod: none
`

func run(ctx context.Context, out io.Writer) error {
	kubectl, err := findKubectl()
	if err != nil {
		return err
	}
	step(out, "Starting etcd and kube-apiserver (built from source, cached) and installing the CRDs")
	env, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() {
		step(out, "Stopping the API server and etcd")
		_ = env.Stop()
	}()
	dir, err := os.MkdirTemp("", "kubeoauth-demo-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := env.WriteKubeconfig(kubeconfig); err != nil {
		return err
	}
	bad := filepath.Join(dir, "sloppy.yaml")
	if err := os.WriteFile(bad, []byte(badClient), 0o600); err != nil {
		return err
	}
	samples := filepath.Join(testenv.RepoRoot(), "config", "samples")
	k := func(args ...string) error { return sh(ctx, out, kubectl, kubeconfig, args...) }

	step(out, "The samples live in two namespaces: the platform team's and an app team's")
	if err := k("create", "namespace", "platform"); err != nil {
		return err
	}
	if err := k("create", "namespace", "observability"); err != nil {
		return err
	}
	step(out, "Apply one TokenServer, one OAuthClient and one ConsentGrant (config/samples)")
	if err := k("apply", "--server-side", "-k", samples); err != nil {
		return err
	}
	step(out, "List them; the API server fills in the defaults (no controller runs yet, so Ready is empty)")
	if err := k("get", "oauthclients,consentgrants,tokenservers", "--all-namespaces", "-o", "wide"); err != nil {
		return err
	}
	if err := k("get", "oauthclient", "grafana", "-n", "observability",
		"-o", "jsonpath={.spec.tokenEndpointAuthMethod} {.spec.secret.rotation.overlap} {.spec.deletionPolicy}{\"\\n\"}"); err != nil {
		return err
	}
	step(out, "A bad OAuthClient is refused at admission, each message naming its field")
	_, _ = fmt.Fprint(out, indent(badClient))
	err = k("apply", "--server-side", "-f", bad)
	if err == nil {
		return errors.New("the API server accepted an OAuthClient that breaks three rules")
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		return err
	}
	step(out, "Done. Run the tests with: make test")
	return nil
}

func step(out io.Writer, msg string) { _, _ = fmt.Fprintf(out, "\n==> %s\n", msg) }

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

// sh prints the command as a user would type it, then runs it.
func sh(ctx context.Context, out io.Writer, kubectl, kubeconfig string, args ...string) error {
	_, _ = fmt.Fprintf(out, "$ kubectl %s\n", strings.Join(args, " "))
	cmd := exec.CommandContext(ctx, kubectl, args...) // #nosec G204 -- our own arguments
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig)
	cmd.Stdout, cmd.Stderr = out, out
	return cmd.Run()
}

// findKubectl returns $KUBECTL, or a kubectl of the API server's version built (once) by
// hack/control-plane.sh: a kubectl from elsewhere may lie outside the supported skew.
func findKubectl() (string, error) {
	if k := os.Getenv("KUBECTL"); k != "" {
		return k, nil
	}
	script := filepath.Join(testenv.RepoRoot(), "hack", "control-plane.sh")
	cmd := exec.Command(script, "kubectl") // #nosec G204 -- our own script
	cmd.Stderr = os.Stderr
	dir, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("building kubectl with %s: %w", script, err)
	}
	return filepath.Join(strings.TrimSpace(string(dir)), "kubectl"), nil
}
