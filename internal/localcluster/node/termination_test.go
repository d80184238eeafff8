package node

import (
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

const shell = `images:
- image: busybox
  command: ["/bin/sh"]
`

// A container's termination message reaches its terminated state as the kubelet
// reports it: what it wrote at terminationMessagePath (the default
// /dev/termination-log, or another path, as any user); with FallbackToLogsOnError
// the log's tail when it failed without writing one; at most 4096 bytes; the
// previous instance's in lastState.
func TestTerminationMessages(t *testing.T) {
	tn := startNode(t, shell)
	long := strings.Repeat("a", 1000) + strings.Repeat("b", 4096)
	var hundredLines, last80 strings.Builder
	for i := 1; i <= 100; i++ {
		fmt.Fprintf(&hundredLines, "line %d\n", i)
		if i > 20 {
			fmt.Fprintf(&last80, "line %d\n", i)
		}
	}
	type result struct {
		phase   corev1.PodPhase
		message string
	}
	tests := map[string]struct {
		pod  *corev1.Pod
		want result
	}{
		// The plan Job of an upgrade reports its result this way.
		"default path, succeeded": {
			pod: job("default-path", "busybox", "/bin/sh", "-c",
				"echo noise >/dev/null; printf 'mode: Shared\\nreason: expand only' >/dev/termination-log"),
			want: result{corev1.PodSucceeded, "mode: Shared\nreason: expand only"}},
		"another path, non-root": {
			pod: func() *corev1.Pod {
				pd := job("other-path", "busybox", "/bin/sh", "-c", "id -u >/mnt/result/message; exit 2")
				pd.Spec.Containers[0].TerminationMessagePath = "/mnt/result/message"
				pd.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsUser: ptr.To[int64](65532),
					RunAsGroup: ptr.To[int64](65532), RunAsNonRoot: ptr.To(true)}
				return pd
			}(),
			want: result{corev1.PodFailed, "65532\n"}},
		"over 4096 bytes: the last 4096": {
			pod:  job("long", "busybox", "/bin/sh", "-c", "printf '"+long+"' >/dev/termination-log"),
			want: result{corev1.PodSucceeded, strings.Repeat("b", 4096)}},
		"FallbackToLogsOnError, failed: the log's last 80 lines": {
			pod: func() *corev1.Pod {
				pd := job("fallback", "busybox", "/bin/sh", "-c", "printf '"+hundredLines.String()+"'; exit 3")
				pd.Spec.Containers[0].TerminationMessagePolicy = corev1.TerminationMessageFallbackToLogsOnError
				return pd
			}(),
			want: result{corev1.PodFailed, last80.String()}},
		"FallbackToLogsOnError, the file wins": {
			pod: func() *corev1.Pod {
				pd := job("fallback-file", "busybox", "/bin/sh", "-c", "echo log; echo file >/dev/termination-log; exit 3")
				pd.Spec.Containers[0].TerminationMessagePolicy = corev1.TerminationMessageFallbackToLogsOnError
				return pd
			}(),
			want: result{corev1.PodFailed, "file\n"}},
		"FallbackToLogsOnError, succeeded: no message": {
			pod: func() *corev1.Pod {
				pd := job("fallback-ok", "busybox", "/bin/sh", "-c", "echo log")
				pd.Spec.Containers[0].TerminationMessagePolicy = corev1.TerminationMessageFallbackToLogsOnError
				return pd
			}(),
			want: result{corev1.PodSucceeded, ""}},
		"File policy, failed: no fallback": {
			pod:  job("file-failed", "busybox", "/bin/sh", "-c", "echo log; exit 3"),
			want: result{corev1.PodFailed, ""}},
	}
	for _, tt := range tests {
		tn.create(t, tt.pod)
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			pd := tn.waitPod(t, tt.pod.Name, "exited", 30*time.Second, terminated)
			term := pd.Status.ContainerStatuses[0].State.Terminated
			if got := (result{pd.Status.Phase, term.Message}); got != tt.want {
				t.Errorf("phase %s, message %q; want %s, %q", got.phase, got.message, tt.want.phase, tt.want.message)
			}
		})
	}

	t.Run("a restarted container: its own file, the last one's message in lastState", func(t *testing.T) {
		pd := job("restarted", "busybox", "/bin/sh", "-c",
			`cat /dev/termination-log; n=$(cat /work/n 2>/dev/null || echo 0); n=$((n+1)); echo $n >/work/n; `+
				`echo "attempt $n" >/dev/termination-log; [ $n -ge 2 ]`)
		pd.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
		pd.Spec.Volumes = []corev1.Volume{{Name: "work", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}
		pd.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "work", MountPath: "/work"}}
		tn.create(t, pd)
		got := tn.waitPod(t, pd.Name, "succeeded on the second attempt", 30*time.Second, terminated)
		cs := got.Status.ContainerStatuses[0]
		if got.Status.Phase != corev1.PodSucceeded || cs.RestartCount != 1 {
			t.Fatalf("phase %s, restarts %d", got.Status.Phase, cs.RestartCount)
		}
		if cs.State.Terminated.Message != "attempt 2\n" {
			t.Errorf("message %q, want the second attempt's only (each instance starts with an empty file)", cs.State.Terminated.Message)
		}
		if last := cs.LastTerminationState.Terminated; last == nil || last.Message != "attempt 1\n" || last.ExitCode != 1 {
			t.Errorf("lastState %+v, want the first attempt's exit", last)
		}
	})
}
