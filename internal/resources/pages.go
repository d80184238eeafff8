package resources

import (
	corev1 "k8s.io/api/core/v1"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// AnnotationPages on the token server's pod template is the digest of the templates
// the pods mount: they read them at start, so a change rolls them.
const AnnotationPages = "oauth.kubeoauth.io/pages-hash"

const mountPages = "/etc/kubeoauth/pages"

// PagesConfigMapName names the ConfigMap of the templates the pods mount: the
// operator's copy of spec.branding.templatesConfigMapRef, made once they passed its
// checks, so that a template that cannot be used never reaches a pod, not even one
// that restarts.
func PagesConfigMapName(ts *oauthv1alpha1.TokenServer) string { return ts.Name + "-pages" }

// PagesConfigMap holds templates, by file name, for the pods to mount.
func PagesConfigMap(ts *oauthv1alpha1.TokenServer, files map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: meta(ts, PagesConfigMapName(ts), componentServer), Data: files}
}

// brandingPod is what spec.branding adds to the token server's pod: the display name
// and logo as flags, the templates' ConfigMap as a volume (with its digest, pagesHash,
// as an annotation).
func brandingPod(ts *oauthv1alpha1.TokenServer, pagesHash string) ([]corev1.EnvVar, []corev1.VolumeMount, []corev1.Volume,
	map[string]string) {
	b := ts.Spec.Branding
	if b == nil {
		return nil, nil, nil, nil
	}
	var env []corev1.EnvVar
	if b.DisplayName != "" {
		env = append(env, corev1.EnvVar{Name: "KUBEOAUTH_DISPLAY_NAME", Value: b.DisplayName})
	}
	if b.LogoURL != "" {
		env = append(env, corev1.EnvVar{Name: "KUBEOAUTH_LOGO_URL", Value: b.LogoURL})
	}
	if b.TemplatesConfigMapRef == nil {
		return env, nil, nil, nil
	}
	env = append(env, corev1.EnvVar{Name: "KUBEOAUTH_TEMPLATES_DIR", Value: mountPages})
	return env, []corev1.VolumeMount{{Name: "pages", MountPath: mountPages, ReadOnly: true}},
		[]corev1.Volume{{Name: "pages", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: PagesConfigMapName(ts)}}}}},
		map[string]string{AnnotationPages: pagesHash}
}

func withAnnotation(m map[string]string, k, v string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	m[k] = v
	return m
}
