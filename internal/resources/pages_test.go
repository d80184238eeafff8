package resources

import (
	"maps"
	"testing"

	corev1 "k8s.io/api/core/v1"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

func TestBrandingPod(t *testing.T) {
	in := Inputs{Color: ColorBlue, Image: "tokenserver:v1", Replicas: 1, ConfigHash: "h1", PagesHash: "p1"}
	tests := map[string]struct {
		branding    *oauthv1alpha1.Branding
		env         map[string]string
		annotations map[string]string
		pages       bool // the pods mount auth-pages
	}{
		// Unchanged from before branding, so that an operator upgrade rolls no pods.
		"none": {annotations: map[string]string{AnnotationConfig: "h1"}},
		"a name and a logo": {branding: &oauthv1alpha1.Branding{DisplayName: "Example Corp", LogoURL: "https://cdn.example.com/l.svg"},
			env:         map[string]string{"KUBEOAUTH_DISPLAY_NAME": "Example Corp", "KUBEOAUTH_LOGO_URL": "https://cdn.example.com/l.svg"},
			annotations: map[string]string{AnnotationConfig: "h1"}},
		"templates": {branding: &oauthv1alpha1.Branding{TemplatesConfigMapRef: &oauthv1alpha1.LocalObjectReference{Name: "mine"}},
			env:         map[string]string{"KUBEOAUTH_TEMPLATES_DIR": mountPages},
			annotations: map[string]string{AnnotationConfig: "h1", AnnotationPages: "p1"}, pages: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			sts := TokenServerStatefulSet(server(func(ts *oauthv1alpha1.TokenServer) { ts.Spec.Branding = tc.branding }), in)
			pod := sts.Spec.Template
			env := envOf(pod.Spec.Containers[0])
			for _, k := range []string{"KUBEOAUTH_DISPLAY_NAME", "KUBEOAUTH_LOGO_URL", "KUBEOAUTH_TEMPLATES_DIR"} {
				if env[k] != tc.env[k] {
					t.Errorf("%s=%q, want %q", k, env[k], tc.env[k])
				}
			}
			if !maps.Equal(pod.Annotations, tc.annotations) {
				t.Errorf("pod annotations %v, want %v", pod.Annotations, tc.annotations)
			}
			var vol *corev1.Volume
			for i, v := range pod.Spec.Volumes {
				if v.Name == "pages" {
					vol = &pod.Spec.Volumes[i]
				}
			}
			mounted := false
			for _, m := range pod.Spec.Containers[0].VolumeMounts {
				mounted = mounted || (m.Name == "pages" && m.MountPath == mountPages && m.ReadOnly)
			}
			// The operator's checked copy, never the user's ConfigMap itself.
			if got := vol != nil && vol.ConfigMap != nil && vol.ConfigMap.Name == "auth-pages" && mounted; got != tc.pages {
				t.Errorf("auth-pages mounted: %v, want %v (volume %+v)", got, tc.pages, vol)
			}
		})
	}
}
