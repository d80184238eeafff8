package main

import (
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/resources"
	"github.com/kubeoauth/kubeoauth/internal/testing/testenv"
)

// The token server's flags are how it is run outside the operator (and how the
// operator runs it): docs/tokenserver.md's flag table must name every flag of
// `tokenserver serve`, as `tokenserver serve --help` prints them, and its commands
// table every `db` command.
func TestDocsListEveryServeFlagAndCommand(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "docs", "tokenserver.md"))
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	row := regexp.MustCompile("^\\| `--")
	name := regexp.MustCompile("`--([a-z0-9-]+)`")
	for _, line := range strings.Split(string(doc), "\n") {
		if !row.MatchString(line) {
			continue
		}
		cell, _, _ := strings.Cut(strings.TrimPrefix(line, "| "), " |")
		for _, m := range name.FindAllStringSubmatch(cell, -1) {
			documented[m[1]] = true
		}
	}

	help := helpOf(t, "serve")
	flags := regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(help, -1)
	if len(flags) < 20 {
		t.Fatalf("tokenserver serve --help listed %d flags:\n%s", len(flags), help)
	}
	for _, f := range flags {
		if !documented[f[1]] {
			t.Errorf("docs/tokenserver.md's flag table has no row for --%s", f[1])
		}
	}
	for _, cmd := range []string{"copy", "replay", "cutover", "cleanup"} {
		if !strings.Contains(string(doc), "| `tokenserver db "+cmd+" ") {
			t.Errorf("docs/tokenserver.md's commands table has no row for tokenserver db %s", cmd)
		}
	}
}

// helpOf is what `tokenserver <command> --help` prints (on standard output).
func helpOf(t *testing.T, command string) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	err = run(context.Background(), []string{command, "--help"}, io.Discard, io.Discard)
	os.Stdout = stdout
	_ = w.Close()
	out := <-done
	_ = r.Close()
	if !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("tokenserver %s --help: %v", command, err)
	}
	return out
}

// The operator configures the bundled server through KUBEOAUTH_* variables, each of
// which the server reads as the flag of that name: a variable that names no flag
// would be ignored without a word, the setting lost. Every variable the StatefulSet
// sets, with every optional setting that adds one, names a flag of serve.
func TestStatefulSetEnvironmentNamesServeFlags(t *testing.T) {
	help := helpOf(t, "serve")
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^  -([a-z0-9-]+)`).FindAllStringSubmatch(help, -1) {
		flags[m[1]] = true
	}
	ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Name: "auth", Namespace: "auth"},
		Spec: oauthv1alpha1.TokenServerSpec{Issuer: "https://auth.example.com", Image: "tokenserver:v1",
			Tokens: oauthv1alpha1.TokenSettings{AccessTokenFormat: "jwt", AccessTokenLifespan: "15m", RefreshTokenLifespan: "720h",
				IDTokenLifespan: "1h", AuthorizationCodeLifespan: "5m", RefreshGracePeriod: "30s", SigningAlgorithm: "ES256",
				RequirePKCE: ptr.To(false), RequirePushedAuthorizationRequests: true, DeviceCodeLifespan: "15m", DevicePollInterval: "5s"},
			Login: &oauthv1alpha1.LoginSpec{UsersSecretRef: &oauthv1alpha1.SecretKeyReference{Name: "users"},
				UpstreamOIDC: &oauthv1alpha1.UpstreamOIDC{Issuer: "https://sso.example.com", ClientID: "x",
					ClientSecretRef: oauthv1alpha1.SecretKeyReference{Name: "upstream"}, CASecretRef: &oauthv1alpha1.SecretKeyReference{Name: "ca"}},
				ClientIPHeader: "X-Forwarded-For", TrustedProxies: []string{"10.0.0.0/8"}}}}
	sts := resources.TokenServerStatefulSet(ts, resources.Inputs{Color: resources.ColorBlue, Image: "tokenserver:v1", Replicas: 1,
		HasPreviousKey: true})
	seen := 0
	for _, e := range sts.Spec.Template.Spec.Containers[0].Env {
		name, ok := strings.CutPrefix(e.Name, "KUBEOAUTH_")
		if !ok {
			continue
		}
		seen++
		if f := strings.ToLower(strings.ReplaceAll(name, "_", "-")); !flags[f] {
			t.Errorf("the StatefulSet sets %s=%q, but serve has no flag --%s", e.Name, e.Value, f)
		}
	}
	if seen < 25 {
		t.Errorf("the StatefulSet set %d KUBEOAUTH_ variables; is the test's TokenServer missing settings?", seen)
	}
}
