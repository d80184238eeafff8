package node

import (
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// A running pod sees its Secret change in the files of its Secret volume, without a
// restart, as on a kubelet: the token server reads its users file again that way.
// The container reads the file until it holds the new content, then exits 0; it
// would exit 1 after 60 s, and the check before the update shows the old content
// was there first.
func TestSecretVolumeFollowsTheSecret(t *testing.T) {
	volumeSyncPeriod = 200 * time.Millisecond
	tn := startNode(t, twoTags)
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "users", Namespace: tn.ns},
		Data: map[string][]byte{"users": []byte("alice\n")}}
	sec, err := tn.kube.CoreV1().Secrets(tn.ns).Create(t.Context(), sec, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pd := job("reader", "busybox", "/bin/sh", "-c", `
grep -qx alice /etc/users/users || { echo "first read: $(cat /etc/users/users)"; exit 2; }
for i in $(seq 1 600); do
  if grep -qx bob /etc/users/users; then echo "saw bob after restartless update"; exit 0; fi
  sleep 0.1
done
echo "still: $(cat /etc/users/users)"; exit 1`)
	pd.Spec.Volumes = []corev1.Volume{
		{Name: "users", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{SecretName: "users",
			DefaultMode: ptr.To[int32](0o400)}}}}
	pd.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "users", MountPath: "/etc/users", ReadOnly: true}}
	tn.create(t, pd)
	tn.waitPod(t, "reader", "reader running", 30*time.Second, func(pd *corev1.Pod) error {
		if len(pd.Status.ContainerStatuses) == 1 && pd.Status.ContainerStatuses[0].State.Running != nil {
			return nil
		}
		return fmt.Errorf("container statuses %+v", pd.Status.ContainerStatuses)
	})
	// Let it read the first content before the update (it exits 2 if it was not
	// there).
	time.Sleep(time.Second)
	sec.Data["users"] = []byte("bob\n")
	if _, err := tn.kube.CoreV1().Secrets(tn.ns).Update(t.Context(), sec, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	done := tn.waitPod(t, "reader", "reader exited", 90*time.Second, terminated)
	cs := done.Status.ContainerStatuses[0]
	if cs.State.Terminated.ExitCode != 0 || cs.RestartCount != 0 {
		t.Fatalf("the reader exited %d after %d restarts: %s", cs.State.Terminated.ExitCode, cs.RestartCount, logOf(t, tn, "reader"))
	}
}
