//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

const nodeNS = "node-test"

// plainPod exercises what the node does for any pod, beyond what kubeoauth's own
// pods need: an init container writing to an emptyDir, environment from a ConfigMap
// and the downward API, a downwardAPI volume, an httpGet startup probe, a tcpSocket
// readiness probe, an exec liveness probe that starts failing, and a container that
// keeps crashing.
func plainPod() *corev1.Pod {
	sh := func(script string) []string { return []string{"/bin/sh", "-c", script} }
	work := corev1.VolumeMount{Name: "work", MountPath: "/work"}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: nodeNS, Name: "plain", Labels: map[string]string{"app": "plain"}},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyAlways,
			InitContainers: []corev1.Container{{Name: "init", Image: "busybox",
				Command: sh("echo init-done > /work/init"), VolumeMounts: []corev1.VolumeMount{work}}},
			Containers: []corev1.Container{
				{Name: "app", Image: "busybox", VolumeMounts: []corev1.VolumeMount{work, {Name: "podinfo", MountPath: "/etc/podinfo"}},
					Command: sh(`cat /work/init; echo "greeting=$GREETING pod=$POD_NAME ip=$POD_IP"; cat /etc/podinfo/labels; echo;
rm -f /work/unhealthy; (sleep 4; touch /work/unhealthy) &
exec python3 -m http.server 8080 --directory /work`),
					Env: []corev1.EnvVar{
						{Name: "GREETING", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
							LocalObjectReference: corev1.LocalObjectReference{Name: "plain"}, Key: "greeting"}}},
						{Name: "POD_NAME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
						{Name: "POD_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
					},
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
					StartupProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
						Path: "/init", Port: intstr.FromInt32(8080)}}, PeriodSeconds: 1, FailureThreshold: 30},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{
						Port: intstr.FromString("http")}}, PeriodSeconds: 1},
					LivenessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{
						Command: []string{"/bin/sh", "-c", "test ! -f /work/unhealthy"}}}, PeriodSeconds: 1, FailureThreshold: 2},
				},
				{Name: "crasher", Image: "busybox", Command: sh("echo crashing; sleep 1; exit 3")},
			},
			Volumes: []corev1.Volume{
				{Name: "work", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
				{Name: "podinfo", VolumeSource: corev1.VolumeSource{DownwardAPI: &corev1.DownwardAPIVolumeSource{
					Items: []corev1.DownwardAPIVolumeFile{{Path: "labels", FieldRef: &corev1.ObjectFieldSelector{
						FieldPath: "metadata.labels['app']"}}}}}},
			},
		},
	}
}

// The node runs a plain pod as a kubelet would.
func testPlainPod(t *testing.T) {
	ctx := t.Context()
	for _, o := range []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nodeNS}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: nodeNS, Name: "plain"}, Data: map[string]string{"greeting": "hello"}},
		plainPod(),
	} {
		if err := suite.c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	var pod corev1.Pod
	status := func(name string) (corev1.ContainerStatus, error) {
		if err := suite.c.Get(ctx, client.ObjectKey{Namespace: nodeNS, Name: "plain"}, &pod); err != nil {
			return corev1.ContainerStatus{}, err
		}
		for _, s := range pod.Status.ContainerStatuses {
			if s.Name == name {
				return s, nil
			}
		}
		return corev1.ContainerStatus{}, fmt.Errorf("no status for %s yet", name)
	}
	eventually(t, 30*time.Second, "the app container started (httpGet) and ready (tcpSocket)", func() error {
		s, err := status("app")
		if err != nil || !s.Ready || s.Started == nil || !*s.Started {
			return fmt.Errorf("%+v %v", s, err)
		}
		return nil
	})
	if ip := net.ParseIP(pod.Status.PodIP); ip == nil || !strings.HasPrefix(pod.Status.PodIP, "10.244.0.") {
		t.Errorf("pod IP %q, want one of the pod network", pod.Status.PodIP)
	}
	logs, err := kubectl(ctx, "-n", nodeNS, "logs", "plain", "-c", "app")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"init-done", "greeting=hello pod=plain ip=" + pod.Status.PodIP, "plain"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the app's log lacks %q:\n%s", want, logs)
		}
	}
	eventually(t, 30*time.Second, "the crashing container restarted twice", func() error {
		s, err := status("crasher")
		if err != nil || s.RestartCount < 2 || s.LastTerminationState.Terminated == nil && s.State.Terminated == nil {
			return fmt.Errorf("%+v %v", s, err)
		}
		return nil
	})
	if prev, err := kubectl(ctx, "-n", nodeNS, "logs", "plain", "-c", "crasher", "--previous"); err != nil || !strings.Contains(prev, "crashing") {
		t.Errorf("logs --previous of the crashing container: %q %v", prev, err)
	}
	eventually(t, 30*time.Second, "the failing liveness probe restarted the app", func() error {
		s, err := status("app")
		if err != nil || s.RestartCount < 1 {
			return fmt.Errorf("%+v %v", s, err)
		}
		return nil
	})
	if pod.Status.Phase != corev1.PodRunning {
		t.Errorf("phase %s", pod.Status.Phase)
	}

	// A mount path whose parent does not exist under / cannot be made without
	// changing the host: the container fails and its log says why.
	slash := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: nodeNS, Name: "slash-mount"},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "c",
			Image: "busybox", Command: []string{"/bin/sh", "-c", "echo should-not-run"},
			VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/kubeoauth-e2e-data"}}}},
			Volumes: []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}}}
	if err := suite.c.Create(ctx, slash); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the pod mounting at a new top-level directory failed", func() error {
		if err := suite.c.Get(ctx, client.ObjectKeyFromObject(slash), slash); err != nil {
			return err
		}
		if slash.Status.Phase != corev1.PodFailed {
			return fmt.Errorf("phase %s", slash.Status.Phase)
		}
		return nil
	})
	if s := slash.Status.ContainerStatuses; len(s) != 1 || s[0].State.Terminated == nil || s[0].State.Terminated.ExitCode != 128 {
		t.Errorf("the container that could not start: %+v; want terminated with 128", s)
	}
	if out, _ := kubectl(ctx, "-n", nodeNS, "logs", "slash-mount"); !strings.Contains(out, "mountPath /kubeoauth-e2e-data") ||
		strings.Contains(out, "should-not-run") {
		t.Errorf("the failed mount's log does not say which mountPath failed:\n%s", out)
	}
	if _, err := os.Stat("/kubeoauth-e2e-data"); err == nil {
		t.Error("the node made /kubeoauth-e2e-data on the host")
	}
}

// restrictedPod and restrictedContainer meet the restricted Pod Security Standard,
// which the platform namespace enforces.
func restrictedPod(uid int64, fsGroup *int64) *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To(uid), RunAsGroup: ptr.To(uid),
		FSGroup: fsGroup, SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}
}

func restrictedContainer() *corev1.SecurityContext {
	return &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
		Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}}
}

// The node enforces security contexts as a kubelet does: kubeoauth's own processes
// run as their pods' users without privileges; a Secret mounted 0440 is readable by
// a non-root pod only with an fsGroup (issue 11: the bundled pods had none, and only
// a node that ran everything as root let them read their Secrets); runAsNonRoot
// refuses an image that runs as root.
func testSecurityContexts(t *testing.T) {
	ctx := t.Context()
	for pod, uid := range map[string]string{"auth-blue-0": "65532", "auth-db-0": "999"} {
		status := processStatus(t, containerPid(t, pod))
		if status["Uid"] != strings.Repeat(uid+"\t", 3)+uid || status["NoNewPrivs"] != "1" || status["CapEff"] != "0000000000000000" ||
			status["CapBnd"] != "0000000000000000" {
			t.Errorf("%s runs with %v; want uid %s, no_new_privs, no capabilities", pod, status, uid)
		}
	}

	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: nodeNS, Name: "dsn"}, StringData: map[string]string{"dsn": "postgres://x"}}
	if err := suite.c.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	reader := func(name string, fsGroup *int64) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: nodeNS, Name: name},
			Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, SecurityContext: restrictedPod(65532, fsGroup),
				Containers: []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"cat", "/etc/kubeoauth-e2e/dsn"},
					SecurityContext: restrictedContainer(),
					VolumeMounts:    []corev1.VolumeMount{{Name: "dsn", MountPath: "/etc/kubeoauth-e2e", ReadOnly: true}}}},
				Volumes: []corev1.Volume{{Name: "dsn", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
					SecretName: "dsn", DefaultMode: ptr.To[int32](0o440)}}}}}}
	}
	rootImage := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: nodeNS, Name: "root-image"},
		Spec: corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true)},
			Containers: []corev1.Container{{Name: "c", Image: "busybox", Command: []string{"/bin/sh", "-c", "echo should-not-run"}}}}}
	for _, p := range []*corev1.Pod{reader("no-fsgroup", nil), reader("fsgroup", ptr.To[int64](65532)), rootImage} {
		if err := suite.c.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range map[string]corev1.PodPhase{"no-fsgroup": corev1.PodFailed, "fsgroup": corev1.PodSucceeded} {
		eventually(t, 30*time.Second, name+" "+string(want), func() error {
			var p corev1.Pod
			if err := suite.c.Get(ctx, client.ObjectKey{Namespace: nodeNS, Name: name}, &p); err != nil {
				return err
			}
			if p.Status.Phase != want {
				return fmt.Errorf("phase %s", p.Status.Phase)
			}
			return nil
		})
	}
	if out, _ := kubectl(ctx, "-n", nodeNS, "logs", "no-fsgroup"); !strings.Contains(out, "Permission denied") {
		t.Errorf("without fsGroup the Secret was not refused: %q", out)
	}
	if out, _ := kubectl(ctx, "-n", nodeNS, "logs", "fsgroup"); out != "postgres://x" {
		t.Errorf("with fsGroup the pod read %q", out)
	}
	eventually(t, 30*time.Second, "root-image refused", func() error {
		if err := suite.c.Get(ctx, client.ObjectKeyFromObject(rootImage), rootImage); err != nil {
			return err
		}
		s := rootImage.Status.ContainerStatuses
		if len(s) != 1 || s[0].State.Waiting == nil || s[0].State.Waiting.Reason != "CreateContainerConfigError" {
			return fmt.Errorf("%+v", s)
		}
		if msg := s[0].State.Waiting.Message; !strings.HasPrefix(msg, "container has runAsNonRoot and image will run as root") {
			return fmt.Errorf("message %q", msg)
		}
		return nil
	})
	if rootImage.Status.Phase != corev1.PodPending {
		t.Errorf("root-image phase %s, want Pending", rootImage.Status.Phase)
	}
	eventually(t, 30*time.Second, "root-image's Failed event, as kubectl describe shows it", func() error {
		var events corev1.EventList
		if err := suite.c.List(ctx, &events, client.InNamespace(nodeNS)); err != nil {
			return err
		}
		for _, e := range events.Items {
			if e.InvolvedObject.UID == rootImage.UID && e.Reason == "Failed" && e.Type == corev1.EventTypeWarning &&
				strings.HasPrefix(e.Message, "Error: container has runAsNonRoot and image will run as root") {
				return nil
			}
		}
		return fmt.Errorf("no such event among %d", len(events.Items))
	})
}

// processStatus is /proc/<child of the shim>/status: the container's process.
func processStatus(t *testing.T, shim int) map[string]string {
	t.Helper()
	// Listed by the thread that forked them: the shim's is not its main thread.
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", shim))
	if err != nil {
		t.Fatal(err)
	}
	children := make([]string, 0, 1)
	for _, task := range tasks {
		data, _ := os.ReadFile(task) // #nosec G304 -- /proc
		children = append(children, strings.Fields(string(data))...)
	}
	if len(children) == 0 {
		t.Fatalf("the shim %d has no process", shim)
	}
	data, err := os.ReadFile("/proc/" + children[0] + "/status")
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(data), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// A process that ignores SIGTERM is killed when the grace period ends, and the pod
// object goes away then, not after the default 30 s.
func testGracePeriod(t *testing.T) {
	ctx := t.Context()
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: nodeNS, Name: "stubborn"},
		Spec: corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](2), Containers: []corev1.Container{{Name: "c",
			Image: "busybox", Command: []string{"/bin/sh", "-c", "trap 'echo ignoring TERM' TERM; echo trapped; while true; do sleep 0.2; done"}}}}}
	if err := suite.c.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "stubborn running", func() error {
		if err := suite.c.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
			return err
		}
		if len(pod.Status.ContainerStatuses) == 0 || pod.Status.ContainerStatuses[0].State.Running == nil {
			return fmt.Errorf("%+v", pod.Status.ContainerStatuses)
		}
		// Running means the process started, not that the shell has set its trap
		// yet (as on a kubelet): a TERM before it would end the shell at once.
		if logs, err := kubectl(ctx, "-n", nodeNS, "logs", "stubborn"); err != nil || !strings.Contains(logs, "trapped") {
			return fmt.Errorf("the trap is not set yet: %q %v", logs, err)
		}
		return nil
	})
	start := time.Now()
	if err := suite.c.Delete(ctx, pod); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, "stubborn deleted", func() error {
		err := suite.c.Get(context.Background(), client.ObjectKeyFromObject(pod), &corev1.Pod{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there (%v)", err)
	})
	took := time.Since(start)
	_ = suite.c.Delete(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: nodeNS}})
	t.Logf("a pod ignoring SIGTERM with a 2 s grace period was gone after %.1fs", took.Seconds())
	if took < 2*time.Second || took > 15*time.Second {
		t.Errorf("deletion took %s; want the 2 s grace period, then SIGKILL (not the default 30 s)", took)
	}
}
