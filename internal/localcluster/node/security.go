package node

import (
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// What the kubelet and a container runtime make of a container's securityContext,
// for a container that is a process of this machine: who it runs as, which
// capabilities it may have, whether it may gain privileges, whether its root is
// read-only. Kept apart from the shim so it can be tested without starting anything.

// Security is how the shim runs a container's process.
type Security struct {
	UID    uint32   `json:"uid"`
	GID    uint32   `json:"gid"`
	Groups []uint32 `json:"groups,omitempty"`
	// NoNewPrivs: allowPrivilegeEscalation is false (set-user-ID files and file
	// capabilities then grant nothing).
	NoNewPrivs bool `json:"noNewPrivs,omitempty"`
	// Capabilities is the bounding set, by number. A process running as root has
	// them all effective; any other user has none, as under a runtime, which gives
	// a non-root container no ambient capabilities.
	Capabilities []int `json:"capabilities"`
	// ReadOnlyRoot: every mount but the container's writable volumes (and /dev,
	// /proc, /sys) is read-only in its mount namespace.
	ReadOnlyRoot bool `json:"readOnlyRoot,omitempty"`
}

// capabilityNames are the capabilities by number, as capabilities(7) names them.
var capabilityNames = []string{
	"CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
	"LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
	"SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
	"SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
	"MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
	"CHECKPOINT_RESTORE",
}

// defaultCapabilities are what containerd and CRI-O give a container that asks for
// nothing.
var defaultCapabilities = []string{"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
	"SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"}

// capability is the number of a capability named as in a securityContext
// ("NET_BIND_SERVICE"; "CAP_NET_BIND_SERVICE" too, as runtimes accept it).
func capability(name string) (int, bool) {
	i := slices.Index(capabilityNames, strings.TrimPrefix(strings.ToUpper(name), "CAP_"))
	return i, i >= 0
}

// capabilitySet is a runtime's bounding set for the container: the defaults (all of
// them when privileged), then add, then drop; ALL in either means every capability.
func capabilitySet(sc *corev1.SecurityContext) ([]int, error) {
	set := map[int]bool{}
	for _, n := range defaultCapabilities {
		c, _ := capability(n)
		set[c] = true
	}
	if sc != nil && ptr.Deref(sc.Privileged, false) {
		for c := range capabilityNames {
			set[c] = true
		}
	}
	if sc != nil && sc.Capabilities != nil {
		apply := func(list []corev1.Capability, v bool) error {
			for _, n := range list {
				if strings.EqualFold(string(n), "ALL") {
					for c := range capabilityNames {
						set[c] = v
					}
					continue
				}
				c, ok := capability(string(n))
				if !ok {
					return fmt.Errorf("unknown capability %q", n)
				}
				set[c] = v
			}
			return nil
		}
		if err := apply(sc.Capabilities.Add, true); err != nil {
			return nil, err
		}
		if err := apply(sc.Capabilities.Drop, false); err != nil {
			return nil, err
		}
	}
	out := []int{}
	for c, on := range set {
		if on {
			out = append(out, c)
		}
	}
	slices.Sort(out)
	return out, nil
}

// effective merges the pod's securityContext into the container's, as the kubelet's
// DetermineEffectiveSecurityContext does: the container's own fields win.
func effective(pod *corev1.Pod, c *corev1.Container) *corev1.SecurityContext {
	sc := &corev1.SecurityContext{}
	if c.SecurityContext != nil {
		sc = c.SecurityContext.DeepCopy()
	}
	if ps := pod.Spec.SecurityContext; ps != nil {
		if sc.RunAsUser == nil {
			sc.RunAsUser = ps.RunAsUser
		}
		if sc.RunAsGroup == nil {
			sc.RunAsGroup = ps.RunAsGroup
		}
		if sc.RunAsNonRoot == nil {
			sc.RunAsNonRoot = ps.RunAsNonRoot
		}
	}
	return sc
}

// configError is the kubelet's CreateContainerConfigError: the container cannot be
// created as its spec says, and will not be until the spec changes.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

// security is how the container of pod runs, given the image's user (numeric, as
// the image map states it; nil when the image has none, which is root). It refuses
// what the kubelet refuses, with its messages.
func security(pod *corev1.Pod, c *corev1.Container, imageUser *imageUser) (*Security, error) {
	sc := effective(pod, c)
	uid, gid := int64(0), int64(0)
	if imageUser != nil {
		uid, gid = imageUser.uid, imageUser.gid
	}
	if err := verifyRunAsNonRoot(pod, c, sc, uid); err != nil {
		return nil, err
	}
	if sc.RunAsUser != nil && *sc.RunAsUser != uid {
		// A runtime takes the group of a user given by number from the image's
		// /etc/passwd; the map knows only the image's own user, so any other gets
		// group 0, as a user the image does not list does.
		uid, gid = *sc.RunAsUser, 0
	}
	if sc.RunAsGroup != nil {
		gid = *sc.RunAsGroup
	}
	caps, err := capabilitySet(sc)
	if err != nil {
		return nil, &configError{fmt.Sprintf("container %s: %v", c.Name, err)}
	}
	s := &Security{UID: id32(uid), GID: id32(gid), Capabilities: caps,
		NoNewPrivs:   sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation,
		ReadOnlyRoot: ptr.Deref(sc.ReadOnlyRootFilesystem, false)}
	if ps := pod.Spec.SecurityContext; ps != nil {
		if ps.FSGroup != nil {
			s.Groups = append(s.Groups, id32(*ps.FSGroup))
		}
		for _, g := range ps.SupplementalGroups {
			if !slices.Contains(s.Groups, id32(g)) {
				s.Groups = append(s.Groups, id32(g))
			}
		}
	}
	return s, nil
}

// id32 converts a user or group id the API server validated (0 to 2^31-1).
func id32(id int64) uint32 { return uint32(id & 0x7fffffff) } // #nosec G115 -- masked to the validated range

// verifyRunAsNonRoot is the kubelet's check of the same name, with its messages.
func verifyRunAsNonRoot(pod *corev1.Pod, c *corev1.Container, sc *corev1.SecurityContext, imageUID int64) error {
	if !ptr.Deref(sc.RunAsNonRoot, false) {
		return nil
	}
	ref := fmt.Sprintf("(pod: %q, container: %s)", fmt.Sprintf("%s_%s(%s)", pod.Name, pod.Namespace, pod.UID), c.Name)
	if sc.RunAsUser != nil {
		if *sc.RunAsUser == 0 {
			return &configError{"container's runAsUser breaks non-root policy " + ref}
		}
		return nil
	}
	if imageUID == 0 {
		return &configError{"container has runAsNonRoot and image will run as root " + ref}
	}
	return nil
}

// imageUser is an image's USER: uid and group, by number.
type imageUser struct{ uid, gid int64 }

// parseImageUser reads "uid" or "uid:gid", numbers only: the image map stands for
// images whose /etc/passwd is this machine's, so a name would mean the wrong user.
func parseImageUser(s string) (*imageUser, error) {
	if s == "" {
		return nil, nil
	}
	u, g, hasGroup := strings.Cut(s, ":")
	uid, err := strconv.ParseInt(u, 10, 32)
	if err != nil || uid < 0 {
		return nil, fmt.Errorf("user %q: want uid or uid:gid, numbers", s)
	}
	gid := int64(0)
	if hasGroup {
		if gid, err = strconv.ParseInt(g, 10, 32); err != nil || gid < 0 {
			return nil, fmt.Errorf("user %q: want uid or uid:gid, numbers", s)
		}
	}
	return &imageUser{uid, gid}, nil
}

// setVolumeOwnership is the kubelet's ownership change for a volume with an
// fsGroup: every file and directory group-owned by it, group-readable (and
// writable, unless the volume is read-only), directories searchable and setgid, so
// files made later stay in the group. With OnRootMismatch it is skipped when the
// volume's root already has the group and those bits.
func setVolumeOwnership(dir string, fsGroup *int64, readOnly bool, policy *corev1.PodFSGroupChangePolicy) error {
	if fsGroup == nil {
		return nil
	}
	gid := int(*fsGroup)
	mask := os.FileMode(0o660)
	if readOnly {
		mask = 0o440
	}
	if ptr.Deref(policy, corev1.FSGroupChangeAlways) == corev1.FSGroupChangeOnRootMismatch {
		if st, err := os.Stat(dir); err == nil {
			want := mask | 0o110
			if sys, ok := st.Sys().(*syscall.Stat_t); ok && int(sys.Gid) == gid &&
				st.Mode().Perm()&want == want && st.Mode()&os.ModeSetgid != 0 {
				return nil
			}
		}
	}
	// Through an os.Root: a pod writes to its volume while this runs, and a file it
	// swaps for a symlink must not lead the change out of the volume.
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer func() { _ = root.Close() }()
	return fs.WalkDir(root.FS(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := root.Lchown(path, -1, gid); err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		m := info.Mode() | mask
		if d.IsDir() {
			m |= os.ModeSetgid | 0o110
		}
		return root.Chmod(path, m&(os.ModePerm|os.ModeSetgid|os.ModeSetuid|os.ModeSticky))
	})
}
