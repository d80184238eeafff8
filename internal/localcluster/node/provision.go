package node

import (
	"context"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// provision is the StorageClass's provisioner, as a local-path provisioner works: a
// claim of our class gets a PersistentVolume that is a directory under the node's
// volumes/ (so it outlives its pods), and a released volume of ours is deleted with
// its directory. It polls each second rather than watching: a handful of claims on a
// test cluster do not justify informers, and a missed event cannot strand a claim.
func (n *Node) provision(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		if err := n.provisionOnce(ctx); err != nil && ctx.Err() == nil {
			n.log.Error(err, "provisioning volumes")
		}
	}
}

func (n *Node) provisionOnce(ctx context.Context) error {
	classes, err := n.addons.StorageV1().StorageClasses().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	ours := map[string]bool{}
	defaultClass := ""
	for _, sc := range classes.Items {
		if sc.Provisioner == Provisioner {
			ours[sc.Name] = true
			if sc.Annotations["storageclass.kubernetes.io/is-default-class"] == "true" {
				defaultClass = sc.Name
			}
		}
	}
	claims, err := n.addons.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range claims.Items {
		pvc := &claims.Items[i]
		class := defaultClass
		if pvc.Spec.StorageClassName != nil {
			class = *pvc.Spec.StorageClassName
		}
		if pvc.Spec.VolumeName != "" || pvc.Status.Phase != corev1.ClaimPending || !ours[class] || pvc.DeletionTimestamp != nil {
			continue
		}
		if err := n.createVolume(ctx, pvc, class); err != nil {
			return err
		}
	}
	return n.deleteReleased(ctx)
}

func (n *Node) createVolume(ctx context.Context, pvc *corev1.PersistentVolumeClaim, class string) error {
	name := "pvc-" + string(pvc.UID)
	dir := filepath.Join(n.cfg.Dir, "volumes", name)
	// Root-owned and closed to others, as a new file system's root is: a pod that
	// runs as another user writes to it only through its fsGroup.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{"pv.kubernetes.io/provisioned-by": Provisioner}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: pvc.Spec.Resources.Requests[corev1.ResourceStorage]},
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			StorageClassName:              class,
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID},
			// Local, not hostPath: the kubelet applies a pod's fsGroup to local volumes.
			PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: dir}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn,
					Values: []string{n.cfg.NodeName}}}}}}},
		},
	}
	_, err := n.addons.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if err == nil {
		n.log.Info("provisioned volume", "claim", pvc.Namespace+"/"+pvc.Name, "dir", dir)
	}
	return ignoreExists(err)
}

func (n *Node) deleteReleased(ctx context.Context) error {
	pvs, err := n.addons.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, pv := range pvs.Items {
		if pv.Annotations["pv.kubernetes.io/provisioned-by"] != Provisioner || pv.Status.Phase != corev1.VolumeReleased ||
			pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
			continue
		}
		// Volumes of an earlier version of the provisioner were hostPath ones.
		for _, src := range []string{ptr.Deref(pv.Spec.Local, corev1.LocalVolumeSource{}).Path,
			ptr.Deref(pv.Spec.HostPath, corev1.HostPathVolumeSource{}).Path} {
			if src != "" {
				if err := os.RemoveAll(src); err != nil {
					return err
				}
			}
		}
		if err := n.addons.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{}); err != nil && !isGone(err) {
			return err
		}
		n.log.Info("deleted released volume", "volume", pv.Name)
	}
	return nil
}

func ignoreExists(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}
