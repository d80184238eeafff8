package controllers_test

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/resources"
)

// spec.branding.templatesConfigMapRef: the operator checks the ConfigMap's templates
// as the token server will parse them, and only then copies them into auth-pages,
// which the pods mount; a change rolls the pods. A ConfigMap that is missing, or a
// template that cannot be used, is reported in Degraded, naming the key and the
// error, while the server stays Ready and its pods keep the last good templates.
func TestPageTemplatesConfigMap(t *testing.T) {
	ctx := context.Background()
	ts, _ := upgradeServer(t, "pages", func(ts *oauthv1alpha1.TokenServer) {
		ts.Spec.Branding = &oauthv1alpha1.Branding{DisplayName: "Example Corp", LogoURL: "https://cdn.example.com/logo.svg",
			TemplatesConfigMapRef: &oauthv1alpha1.LocalObjectReference{Name: "auth-templates"}}
	})
	ns := ts.Namespace
	degraded := func(reason, says string) {
		t.Helper()
		eventually(t, 20*time.Second, "Degraded "+reason, func() bool {
			_ = k8s.Get(ctx, client.ObjectKeyFromObject(ts), ts)
			c := meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionDegraded)
			return c != nil && c.Reason == reason && strings.Contains(c.Message, says) &&
				(reason == "Available") == (c.Status == metav1.ConditionFalse)
		}, func() string { return fmt.Sprintf("conditions %+v", ts.Status.Conditions) })
		condIs(t, ts, oauthv1alpha1.ConditionReady, metav1.ConditionTrue, "Available")
	}
	mounted := func() (map[string]string, string) {
		t.Helper()
		var cm corev1.ConfigMap
		get(t, ns, "auth-pages", &cm)
		if !metav1.IsControlledBy(&cm, ts) {
			t.Error("auth-pages must be owned by the TokenServer")
		}
		var sts appsv1.StatefulSet
		get(t, ns, "auth-blue", &sts)
		return cm.Data, sts.Spec.Template.Annotations[resources.AnnotationPages]
	}

	// 1. No ConfigMap yet: the server serves with the built-in pages (auth-pages
	// empty, so that the pods can start), and says what it waits for.
	degraded("PageTemplatesMissing", "waiting for ConfigMap auth-templates (spec.branding.templatesConfigMapRef)")
	var sts appsv1.StatefulSet
	get(t, ns, "auth-blue", &sts)
	env := map[string]string{}
	for _, e := range sts.Spec.Template.Spec.Containers[0].Env {
		env[e.Name] = e.Value
	}
	if env["KUBEOAUTH_DISPLAY_NAME"] != "Example Corp" || env["KUBEOAUTH_LOGO_URL"] != "https://cdn.example.com/logo.svg" ||
		env["KUBEOAUTH_TEMPLATES_DIR"] != "/etc/kubeoauth/pages" {
		t.Errorf("token server env %v", env)
	}
	volumeOK := false
	for _, v := range sts.Spec.Template.Spec.Volumes {
		volumeOK = volumeOK || (v.Name == "pages" && v.ConfigMap != nil && v.ConfigMap.Name == "auth-pages")
	}
	if !volumeOK {
		t.Errorf("the pods do not mount auth-pages: %+v", sts.Spec.Template.Spec.Volumes)
	}
	files, builtinHash := mounted()
	if len(files) != 0 || builtinHash == "" {
		t.Fatalf("auth-pages before any template passed: %v, pods' hash %q", files, builtinHash)
	}

	// 2. A good template: copied, the pods roll, Degraded clears.
	login := `{{template "top" .}}<p id="custom">{{.Brand.Name}}</p>{{template "bottom" .}}`
	templates := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth-templates"},
		Data: map[string]string{"login.html": login}}
	if err := k8s.Create(ctx, templates); err != nil {
		t.Fatal(err)
	}
	degraded("Available", "")
	var goodHash string
	eventually(t, 20*time.Second, "the template copied and the pods rolled", func() bool {
		files, goodHash = mounted()
		return maps.Equal(files, templates.Data) && goodHash != builtinHash
	}, func() string { return fmt.Sprintf("auth-pages %v, hash %s", files, goodHash) })

	// 2b. auth-pages is the operator's: a key someone adds to it by hand (it would
	// reach the next pod that starts, unchecked) is removed, and the pods' hash
	// stays.
	tamper := func(files map[string]string) {
		t.Helper()
		var cm corev1.ConfigMap
		get(t, ns, "auth-pages", &cm)
		maps.Copy(cm.Data, files)
		if err := k8s.Update(ctx, &cm); err != nil {
			t.Fatal(err)
		}
	}
	tamper(map[string]string{"consent.html": "{{if .Client}}"})
	eventually(t, 20*time.Second, "the key added to auth-pages removed", func() bool {
		files, hash := mounted()
		return maps.Equal(files, templates.Data) && hash == goodHash
	}, func() string { files, hash := mounted(); return fmt.Sprintf("auth-pages %v, hash %s", files, hash) })

	// 3. A template that does not parse, and one that fails on the page's data: each
	// refused, naming the key and html/template's error; nothing reaches the pods.
	// So are templates made to exhaust the operator (which renders them in a child
	// process of itself, with a budget): this test process is that operator, and
	// carries on.
	doubling := `{{define "a0"}}{{end}}`
	for i := 1; i <= 40; i++ {
		doubling += fmt.Sprintf(`{{define "a%d"}}{{template "a%d" .}}{{template "a%d" .}}{{end}}`, i, i-1, i-1)
	}
	for _, c := range []struct{ key, text, says string }{
		{"error.html", `{{template "top" .}}{{range 3000000000}}xxxxxxxxxx{{end}}{{template "bottom" .}}`,
			"ConfigMap auth-templates key error.html: renders more than 1024 KiB"},
		{"logout.html", `{{$x := "a"}}{{range 40}}{{$x = printf "%s%s" $x $x}}{{end}}{{len $x}}`,
			"ConfigMap auth-templates key logout.html: rendering it with sample data used more than 64 MiB"},
		{"account.html", doubling + `{{template "a40" .}}`,
			"ConfigMap auth-templates key account.html: rendering it with sample data took longer than 5s"},
		{"consent.html", "{{if .Client}}", "ConfigMap auth-templates key consent.html: template: consent.html:1: unexpected EOF"},
		{"account.html", "{{.Usrname}}", "ConfigMap auth-templates key account.html: template: account.html:1:2: executing " +
			`"account.html" at <.Usrname>: can't evaluate field Usrname`},
		{"logn.html", "x", "ConfigMap auth-templates key logn.html: not a page template; the templates are account.html, consent.html"},
	} {
		templates.Data = map[string]string{"login.html": login, c.key: c.text}
		if err := k8s.Update(ctx, templates); err != nil {
			t.Fatal(err)
		}
		degraded("PageTemplatesInvalid", c.says)
		if files, hash := mounted(); !maps.Equal(files, map[string]string{"login.html": login}) || hash != goodHash {
			t.Fatalf("a refused template reached the pods: auth-pages %v, hash %s (was %s)", files, hash, goodHash)
		}
	}

	// 3b. While the source is refused, the copy keeps the last good templates; edited
	// by hand into something that does not pass, it falls back to the built-in pages
	// rather than let a pod start with it.
	tamper(map[string]string{"account.html": "{{.Usrname}}"})
	eventually(t, 20*time.Second, "auth-pages back to the built-in pages", func() bool {
		files, hash := mounted()
		return len(files) == 0 && hash == builtinHash
	}, func() string { files, hash := mounted(); return fmt.Sprintf("auth-pages %v, hash %s", files, hash) })

	// 4. Fixed: copied, rolled, Degraded clears.
	templates.Data = map[string]string{"login.html": login, "error.html": `<p>{{.Error}}</p>`}
	if err := k8s.Update(ctx, templates); err != nil {
		t.Fatal(err)
	}
	degraded("Available", "")
	eventually(t, 20*time.Second, "the fixed templates copied and the pods rolled", func() bool {
		files, hash := mounted()
		return maps.Equal(files, templates.Data) && hash != goodHash
	}, nil)

	// 5. auth-pages deleted: made again at once (pods that start need the volume).
	if err := k8s.Delete(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth-pages"}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "auth-pages made again", func() bool {
		var cm corev1.ConfigMap
		return k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "auth-pages"}, &cm) == nil && maps.Equal(cm.Data, templates.Data)
	}, nil)
}
