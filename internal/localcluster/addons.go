package localcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/kubeoauth/kubeoauth/internal/localcluster/node"
)

// StorageClassName is the default StorageClass: volumes are directories on this
// machine, provisioned by the node process.
const StorageClassName = "local"

// AdminClient is a client for the cluster in dir, as its admin.
func AdminClient(dir string) (kubernetes.Interface, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", AdminKubeconfig(dir))
	if err != nil {
		return nil, err
	}
	return kubernetes.NewForConfig(cfg)
}

// installAddons gives the add-ons' user its permissions and makes the default
// StorageClass, as a cluster installer would.
func installAddons(ctx context.Context, dir string) error {
	c, err := AdminClient(dir)
	if err != nil {
		return err
	}
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "kubeoauth-local:addons"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"services", "persistentvolumeclaims"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"discovery.k8s.io"}, Resources: []string{"endpointslices"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{""}, Resources: []string{"persistentvolumes"}, Verbs: []string{"get", "list", "watch", "create", "delete"}},
		{APIGroups: []string{"storage.k8s.io"}, Resources: []string{"storageclasses"}, Verbs: []string{"get", "list", "watch"}},
		{APIGroups: []string{"", "events.k8s.io"}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
	}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "kubeoauth-local:addons"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: addonsUser}}}
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: StorageClassName,
		Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"}},
		Provisioner: node.Provisioner, ReclaimPolicy: ptr.To(corev1.PersistentVolumeReclaimDelete),
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate)}
	errs := []error{
		ignoreExists(c.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{})),
		ignoreExists(c.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{})),
		ignoreExists(c.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{})),
	}
	return errors.Join(errs...)
}

func ignoreExists[T any](_ T, err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// nodeReady waits for the node to register and report Ready.
func nodeReady(dir string) func(context.Context) error {
	return func(ctx context.Context) error {
		c, err := AdminClient(dir)
		if err != nil {
			return err
		}
		n, err := c.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, cond := range n.Status.Conditions {
			if cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return errors.New("node not Ready yet")
	}
}

// setUpNetwork makes the bridge the pods' network namespaces attach to, with the
// host's address on it. There is no NAT: pods reach this machine and each other only.
func setUpNetwork() error {
	if _, err := os.Stat("/sys/class/net/" + Bridge); err == nil {
		return nil
	}
	for _, args := range [][]string{
		{"link", "add", Bridge, "type", "bridge"},
		{"addr", "add", HostIP + "/24", "dev", Bridge},
		{"link", "set", Bridge, "up"},
	} {
		if err := ip(args...); err != nil {
			return err
		}
	}
	return nil
}

// tearDownNetwork removes the pods' network namespaces and the bridge.
func tearDownNetwork(dir string) error {
	errs := []error{node.RemoveNetworkNamespaces(filepath.Join(dir, "node"))}
	if _, err := os.Stat("/sys/class/net/" + Bridge); err == nil {
		errs = append(errs, ip("link", "del", Bridge))
	}
	return errors.Join(errs...)
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput() // #nosec G204 -- fixed arguments
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// stopPods stops the pods' processes the node left running.
func stopPods(dir string, progress io.Writer) error {
	return node.StopAll(filepath.Join(dir, "node"), progress)
}
