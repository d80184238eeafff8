package node

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
)

// resolver reads what a pod refers to — Secrets, ConfigMaps, service-account tokens,
// claims — with one GET per object, which the Node authorizer allows for pods bound to
// this node (a cluster-wide watch, as virtual-kubelet's nodeutil sets up, it forbids).
type resolver struct {
	c      kubernetes.Interface
	hostIP string
}

// env is the container's environment: the image's, the service variables for the
// API server, then the container's own (values from Secrets, ConfigMaps and the
// downward API resolved), later entries overriding earlier ones.
func (r *resolver) env(ctx context.Context, pod *corev1.Pod, c *corev1.Container, image []string,
	apiHost, apiPort string) ([]string, error) {
	vars := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := vars[k]; !ok {
			order = append(order, k)
		}
		vars[k] = v
	}
	for _, kv := range image {
		k, v, _ := strings.Cut(kv, "=")
		set(k, v)
	}
	set("HOSTNAME", pod.Name)
	// There is no kube-proxy, so the API server's own address stands in for the
	// kubernetes Service's ClusterIP.
	set("KUBERNETES_SERVICE_HOST", apiHost)
	set("KUBERNETES_SERVICE_PORT", apiPort)
	set("KUBERNETES_SERVICE_PORT_HTTPS", apiPort)
	for _, from := range c.EnvFrom {
		data, err := r.envFrom(ctx, pod.Namespace, from)
		if err != nil {
			return nil, err
		}
		for k, v := range data {
			set(from.Prefix+k, v)
		}
	}
	for _, e := range c.Env {
		v, err := r.envValue(ctx, pod, c, e, vars)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		set(e.Name, v)
	}
	out := make([]string, 0, len(order))
	for _, k := range order {
		out = append(out, k+"="+vars[k])
	}
	return out, nil
}

func (r *resolver) envFrom(ctx context.Context, ns string, from corev1.EnvFromSource) (map[string]string, error) {
	out := map[string]string{}
	switch {
	case from.SecretRef != nil:
		s, err := r.c.CoreV1().Secrets(ns).Get(ctx, from.SecretRef.Name, metav1.GetOptions{})
		if err != nil {
			return nil, optional(err, from.SecretRef.Optional)
		}
		for k, v := range s.Data {
			out[k] = string(v)
		}
	case from.ConfigMapRef != nil:
		cm, err := r.c.CoreV1().ConfigMaps(ns).Get(ctx, from.ConfigMapRef.Name, metav1.GetOptions{})
		if err != nil {
			return nil, optional(err, from.ConfigMapRef.Optional)
		}
		for k, v := range cm.Data {
			out[k] = v
		}
	}
	return out, nil
}

func optional(err error, opt *bool) error {
	if apierrors.IsNotFound(err) && ptr.Deref(opt, false) {
		return nil
	}
	return err
}

func (r *resolver) envValue(ctx context.Context, pod *corev1.Pod, c *corev1.Container, e corev1.EnvVar,
	vars map[string]string) (string, error) {
	from := e.ValueFrom
	switch {
	case from == nil:
		// $(VAR) refers to variables defined before it.
		return os.Expand(strings.ReplaceAll(e.Value, "$(", "${"), func(k string) string {
			k = strings.TrimSuffix(k, ")")
			return vars[k]
		}), nil
	case from.SecretKeyRef != nil:
		s, err := r.c.CoreV1().Secrets(pod.Namespace).Get(ctx, from.SecretKeyRef.Name, metav1.GetOptions{})
		if err != nil {
			return "", optional(err, from.SecretKeyRef.Optional)
		}
		v, ok := s.Data[from.SecretKeyRef.Key]
		if !ok && !ptr.Deref(from.SecretKeyRef.Optional, false) {
			return "", fmt.Errorf("secret %s has no key %s", s.Name, from.SecretKeyRef.Key)
		}
		return string(v), nil
	case from.ConfigMapKeyRef != nil:
		cm, err := r.c.CoreV1().ConfigMaps(pod.Namespace).Get(ctx, from.ConfigMapKeyRef.Name, metav1.GetOptions{})
		if err != nil {
			return "", optional(err, from.ConfigMapKeyRef.Optional)
		}
		v, ok := cm.Data[from.ConfigMapKeyRef.Key]
		if !ok && !ptr.Deref(from.ConfigMapKeyRef.Optional, false) {
			return "", fmt.Errorf("configmap %s has no key %s", cm.Name, from.ConfigMapKeyRef.Key)
		}
		return v, nil
	case from.FieldRef != nil:
		return fieldValue(pod, from.FieldRef.FieldPath, r.hostIP)
	case from.ResourceFieldRef != nil:
		return resourceValue(c, from.ResourceFieldRef)
	}
	return "", errors.New("unsupported valueFrom")
}

// fieldValue is the downward API's fieldRef.
func fieldValue(pod *corev1.Pod, path, hostIP string) (string, error) {
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP":
		return pod.Status.PodIP, nil
	case "status.hostIP":
		return hostIP, nil
	}
	if k, ok := strings.CutPrefix(path, "metadata.labels['"); ok {
		return pod.Labels[strings.TrimSuffix(k, "']")], nil
	}
	if k, ok := strings.CutPrefix(path, "metadata.annotations['"); ok {
		return pod.Annotations[strings.TrimSuffix(k, "']")], nil
	}
	return "", fmt.Errorf("unsupported fieldRef %q", path)
}

func resourceValue(c *corev1.Container, ref *corev1.ResourceFieldSelector) (string, error) {
	name, isLimit := strings.CutPrefix(ref.Resource, "limits.")
	if !isLimit {
		name = strings.TrimPrefix(ref.Resource, "requests.")
	}
	list := c.Resources.Requests
	if isLimit {
		list = c.Resources.Limits
	}
	q, ok := list[corev1.ResourceName(name)]
	if !ok {
		return "0", nil
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		return strconv.FormatInt(q.Value(), 10), nil
	}
	return strconv.FormatInt(q.MilliValue()/divisor.MilliValue(), 10), nil
}

// volumes writes the pod's volumes under dir (one directory per volume) and returns
// the source path of each volume by name. Claims resolve to their bound volume's
// directory, which outlives the pod. The pod's fsGroup is applied as the kubelet
// applies it: to every volume but hostPath ones (and claims bound to them).
func (r *resolver) volumes(ctx context.Context, pod *corev1.Pod, dir string) (map[string]string, error) {
	var fsGroup *int64
	var policy *corev1.PodFSGroupChangePolicy
	if sc := pod.Spec.SecurityContext; sc != nil {
		fsGroup, policy = sc.FSGroup, sc.FSGroupChangePolicy
	}
	out := map[string]string{}
	for _, v := range pod.Spec.Volumes {
		path := filepath.Join(dir, v.Name)
		var err error
		switch {
		case v.EmptyDir != nil:
			err = emptyDir(path)
			if err == nil {
				err = setVolumeOwnership(path, fsGroup, false, policy)
			}
		case v.HostPath != nil:
			path = v.HostPath.Path
		case v.PersistentVolumeClaim != nil:
			var owned bool
			path, owned, err = r.claimPath(ctx, pod.Namespace, v.PersistentVolumeClaim.ClaimName)
			if err == nil && owned && !v.PersistentVolumeClaim.ReadOnly {
				err = setVolumeOwnership(path, fsGroup, false, policy)
			}
		default:
			var files map[string]file
			files, err = r.volumeFiles(ctx, pod, v)
			if err == nil {
				err = writeFiles(path, files, fsGroup)
			}
			if err == nil {
				err = setVolumeOwnership(path, fsGroup, true, policy)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		out[v.Name] = path
	}
	return out, nil
}

// emptyDir makes an emptyDir's directory as the kubelet does: 0777, whatever the
// node's umask.
func emptyDir(path string) error {
	if err := os.MkdirAll(path, 0o777); err != nil { // #nosec G301 -- shared scratch, as a runtime makes it
		return err
	}
	return os.Chmod(path, 0o777) // #nosec G302 -- as above
}

// fileMode converts an API mode (validated to 0–0777 by the API server).
func fileMode(m int32) os.FileMode { return os.FileMode(uint32(m) & 0o777) } // #nosec G115 -- masked to 9 bits

type file struct {
	data []byte
	mode os.FileMode
}

func (r *resolver) volumeFiles(ctx context.Context, pod *corev1.Pod, v corev1.Volume) (map[string]file, error) {
	switch {
	case v.Secret != nil:
		return r.secretFiles(ctx, pod.Namespace, v.Secret.SecretName, v.Secret.Items, v.Secret.DefaultMode, v.Secret.Optional)
	case v.ConfigMap != nil:
		return r.configMapFiles(ctx, pod.Namespace, v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.DefaultMode, v.ConfigMap.Optional)
	case v.DownwardAPI != nil:
		return r.downwardFiles(pod, v.DownwardAPI.Items, v.DownwardAPI.DefaultMode)
	case v.Projected != nil:
		return r.projectedFiles(ctx, pod, v.Projected)
	}
	return nil, errors.New("unsupported volume type " +
		"(supported: secret, configMap, projected, downwardAPI, emptyDir, hostPath, persistentVolumeClaim)")
}

func (r *resolver) secretFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, mode *int32,
	opt *bool) (map[string]file, error) {
	s, err := r.c.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, optional(err, opt)
	}
	return pick(s.Data, items, mode, opt)
}

func (r *resolver) configMapFiles(ctx context.Context, ns, name string, items []corev1.KeyToPath, mode *int32,
	opt *bool) (map[string]file, error) {
	cm, err := r.c.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, optional(err, opt)
	}
	data := map[string][]byte{}
	for k, v := range cm.Data {
		data[k] = []byte(v)
	}
	for k, v := range cm.BinaryData {
		data[k] = v
	}
	return pick(data, items, mode, opt)
}

// pick selects keys as a Secret or ConfigMap volume does: all keys, or the items;
// an item whose key is missing fails the volume, unless the source is optional,
// where the kubelet leaves it out.
func pick(data map[string][]byte, items []corev1.KeyToPath, mode *int32, opt *bool) (map[string]file, error) {
	m := fileMode(ptr.Deref(mode, 0o644))
	out := map[string]file{}
	if len(items) == 0 {
		for k, v := range data {
			out[k] = file{v, m}
		}
		return out, nil
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if ptr.Deref(opt, false) {
				continue
			}
			return nil, fmt.Errorf("key %s not found", it.Key)
		}
		fm := m
		if it.Mode != nil {
			fm = fileMode(*it.Mode)
		}
		out[it.Path] = file{v, fm}
	}
	return out, nil
}

func (r *resolver) downwardFiles(pod *corev1.Pod, items []corev1.DownwardAPIVolumeFile, mode *int32) (map[string]file, error) {
	out := map[string]file{}
	for _, it := range items {
		if it.FieldRef == nil {
			return nil, fmt.Errorf("downwardAPI item %s: only fieldRef is supported", it.Path)
		}
		v, err := fieldValue(pod, it.FieldRef.FieldPath, r.hostIP)
		if err != nil {
			return nil, err
		}
		out[it.Path] = file{[]byte(v), fileMode(ptr.Deref(it.Mode, ptr.Deref(mode, 0o644)))}
	}
	return out, nil
}

func (r *resolver) projectedFiles(ctx context.Context, pod *corev1.Pod, p *corev1.ProjectedVolumeSource) (map[string]file, error) {
	out := map[string]file{}
	for _, src := range p.Sources {
		var files map[string]file
		var err error
		switch {
		case src.ServiceAccountToken != nil:
			files, err = r.token(ctx, pod, src.ServiceAccountToken, p.DefaultMode)
		case src.ConfigMap != nil:
			files, err = r.configMapFiles(ctx, pod.Namespace, src.ConfigMap.Name, src.ConfigMap.Items, p.DefaultMode, src.ConfigMap.Optional)
		case src.Secret != nil:
			files, err = r.secretFiles(ctx, pod.Namespace, src.Secret.Name, src.Secret.Items, p.DefaultMode, src.Secret.Optional)
		case src.DownwardAPI != nil:
			files, err = r.downwardFiles(pod, src.DownwardAPI.Items, p.DefaultMode)
		default:
			err = errors.New("unsupported projected source")
		}
		if err != nil {
			return nil, err
		}
		for k, v := range files {
			out[k] = v
		}
	}
	return out, nil
}

// token asks for a service-account token bound to the pod, as the kubelet does. The
// API server extends the default one-hour tokens of the automatic volume to a year
// (--service-account-extend-token-expiration), so no refresh is needed for the
// lifetimes this cluster sees.
func (r *resolver) token(ctx context.Context, pod *corev1.Pod, src *corev1.ServiceAccountTokenProjection,
	mode *int32) (map[string]file, error) {
	req := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: src.ExpirationSeconds,
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID}}}
	if src.Audience != "" {
		req.Spec.Audiences = []string{src.Audience}
	}
	tr, err := r.c.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, pod.Spec.ServiceAccountName, req, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token for service account %s: %w", pod.Spec.ServiceAccountName, err)
	}
	return map[string]file{src.Path: {[]byte(tr.Status.Token), fileMode(ptr.Deref(mode, 0o644))}}, nil
}

// claimPath is the directory of the volume the claim is bound to, and whether the
// kubelet would apply an fsGroup to it: to a local volume (as to most CSI
// volumes), not to a hostPath one.
func (r *resolver) claimPath(ctx context.Context, ns, claim string) (string, bool, error) {
	pvc, err := r.c.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{})
	if err != nil {
		return "", false, err
	}
	if pvc.Spec.VolumeName == "" || pvc.Status.Phase != corev1.ClaimBound {
		return "", false, fmt.Errorf("claim %s is not bound yet", claim)
	}
	pv, err := r.c.CoreV1().PersistentVolumes().Get(ctx, pvc.Spec.VolumeName, metav1.GetOptions{})
	if err != nil {
		return "", false, err
	}
	switch {
	case pv.Spec.HostPath != nil:
		return pv.Spec.HostPath.Path, false, nil
	case pv.Spec.Local != nil:
		return pv.Spec.Local.Path, true, nil
	}
	return "", false, fmt.Errorf("volume %s is neither hostPath nor local", pv.Name)
}

// dataLink is the symlink of a Secret, ConfigMap or projected volume to the
// directory that holds its files (the kubelet's name for it).
const dataLink = "..data"

// writeFiles makes dir hold exactly files (paths may have directories), as the
// kubelet's atomic writer lays out a Secret, ConfigMap or projected volume: the files
// are written, with their modes and the pod's fsGroup applied, into a new hidden
// directory, then the ..data symlink is swapped to it by one rename; each top-level
// name is a symlink into ..data. So a reader sees the old set of files or the new
// one, whole: never a file without its permissions, never a new certificate beside
// an old key. Content that did not change is left as it is (a reader that watches
// the file sees nothing). dir itself is never replaced: a running container (one
// re-adopted after a node restart) has it bound at its mount path, and would be left
// with a deleted, empty directory. (The kubelet's AtomicWriter is in
// k8s.io/kubernetes, which is not meant to be imported as a library.)
func writeFiles(dir string, files map[string]file, fsGroup *int64) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	clean := make(map[string]file, len(files))
	for name, f := range files {
		rel := strings.TrimPrefix(filepath.Clean("/"+name), "/")
		if strings.HasPrefix(rel, "..") {
			// As the kubelet refuses it: it would replace ..data or a payload.
			return fmt.Errorf("file %q: must not start with '..'", name)
		}
		clean[rel] = f
	}
	files = clean
	if holds(dir, files) {
		return nil
	}
	payload, err := os.MkdirTemp(dir, "..payload-")
	if err != nil {
		return err
	}
	if err := os.Chmod(payload, 0o755); err != nil { // #nosec G302 -- a volume's directory, as the kubelet makes it
		return err
	}
	tops := map[string]bool{dataLink: true, filepath.Base(payload): true}
	links := map[string]bool{}
	for rel, f := range files {
		top, _, _ := strings.Cut(rel, "/")
		tops[top], links[top] = true, true
		p := filepath.Join(payload, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, f.data, f.mode.Perm()); err != nil {
			return err
		}
		if err := os.Chmod(p, f.mode.Perm()); err != nil {
			return err
		}
	}
	if err := setVolumeOwnership(payload, fsGroup, true, nil); err != nil {
		return err
	}
	if err := replaceWithLink(dir, dataLink, filepath.Base(payload)); err != nil {
		return err
	}
	for top := range links {
		if target, err := os.Readlink(filepath.Join(dir, top)); err == nil && target == filepath.Join(dataLink, top) {
			continue
		}
		if err := replaceWithLink(dir, top, filepath.Join(dataLink, top)); err != nil {
			return err
		}
	}
	// What the new set no longer has, and the payloads before this one.
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !tops[e.Name()] {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// holds says whether dir's ..data already holds exactly files, with the same
// content. Their modes cannot have changed: a pod's volumes are immutable.
func holds(dir string, files map[string]file) bool {
	root, err := os.OpenRoot(filepath.Join(dir, dataLink))
	if err != nil {
		return false
	}
	defer func() { _ = root.Close() }()
	n := 0
	err = fs.WalkDir(root.FS(), ".", func(rel string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		f, ok := files[rel]
		if !ok {
			return fs.ErrNotExist
		}
		old, err := root.ReadFile(rel)
		if err != nil || !bytes.Equal(old, f.data) {
			return fs.ErrNotExist
		}
		return nil
	})
	return err == nil && n == len(files)
}

// replaceWithLink makes dir/name a symlink to target in one rename (whatever was
// there: a file of a volume written before, a directory of one).
func replaceWithLink(dir, name, target string) error {
	tmp := filepath.Join(dir, "..tmp-"+name)
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return err
	}
	dst := filepath.Join(dir, name)
	if st, err := os.Lstat(dst); err == nil && st.IsDir() {
		if err := os.RemoveAll(dst); err != nil {
			return err
		}
	}
	return os.Rename(tmp, dst)
}
