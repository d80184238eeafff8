package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// Each pod gets a network namespace (what a container runtime's pause container
// holds) with one end of a veth pair as eth0 and the other end on the host's bridge.
// Its address comes from the pod network, allocated by pod UID and kept in
// addresses.json, so a node restart keeps every pod's address.

type addresses struct {
	mu   sync.Mutex
	path string
	net  *net.IPNet
	host net.IP
	ByIP map[string]string `json:"byIP"` // address → pod UID
	// Last is the offset of the address handed out last: the next search starts
	// after it, as CNI's host-local IPAM does, so that an address freed a moment
	// ago is not given to the next pod while peers (the host included) still map it
	// to the old pod's link-layer address.
	Last int `json:"last,omitempty"`
}

func loadAddresses(dir, cidr, host string) (*addresses, error) {
	_, ipnet, err := net.ParseCIDR(cidr)
	if err != nil {
		return nil, err
	}
	a := &addresses{path: filepath.Join(dir, "addresses.json"), net: ipnet, host: net.ParseIP(host), ByIP: map[string]string{}}
	data, err := os.ReadFile(a.path)
	if errors.Is(err, os.ErrNotExist) {
		return a, nil
	} else if err != nil {
		return nil, err
	}
	return a, json.Unmarshal(data, a)
}

// allocate returns the pod's address, the same one every time for the same UID.
func (a *addresses) allocate(uid string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for ip, owner := range a.ByIP {
		if owner == uid {
			return ip, nil
		}
	}
	base := a.net.IP.To4()
	ones, bits := a.net.Mask.Size()
	first, end := 2, 1<<(bits-ones)-1 // not the network, the host's .1 by convention, nor broadcast
	for n := range end - first {
		i := first + (max(a.Last-first+1, 0)+n)%(end-first)
		ip := net.IPv4(base[0], base[1], base[2]+byte(i>>8), base[3]+byte(i)).String() // #nosec G115 -- i < 65536: at most a /16
		if _, taken := a.ByIP[ip]; taken || ip == a.host.String() {
			continue
		}
		a.ByIP[ip], a.Last = uid, i
		return ip, a.save()
	}
	return "", errors.New("the pod network " + a.net.String() + " is full")
}

func (a *addresses) release(uid string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for ip, owner := range a.ByIP {
		if owner == uid {
			delete(a.ByIP, ip)
		}
	}
	return a.save()
}

func (a *addresses) save() error {
	data, err := json.Marshal(a)
	if err != nil {
		return err
	}
	tmp := a.path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, a.path)
}

// netnsName is the pod's network namespace (under /run/netns).
func netnsName(uid string) string { return "kubeoauth-" + uid }

// vethName is the host end of the pod's veth pair: interface names are at most 15
// bytes, so it is a hash of the UID.
func vethName(uid string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(uid))
	return fmt.Sprintf("kov%08x", h.Sum32())
}

// setUpPodNetwork creates the pod's namespace with eth0 at ip and a default route to
// the host; it is idempotent, so a half-made namespace is completed.
func setUpPodNetwork(uid, ip, prefix, bridge, hostIP string) error {
	ns := netnsName(uid)
	if _, err := os.Stat("/run/netns/" + ns); err != nil {
		if err := run("ip", "netns", "add", ns); err != nil {
			return err
		}
	}
	veth := vethName(uid)
	if _, err := os.Stat("/sys/class/net/" + veth); err != nil {
		if err := run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns); err != nil {
			return err
		}
	}
	steps := [][]string{
		// An earlier pod may have had this address: the host must not keep sending
		// to its link-layer address.
		{"ip", "neigh", "flush", "to", ip},
		{"ip", "link", "set", veth, "master", bridge},
		{"ip", "link", "set", veth, "up"},
		{"ip", "-n", ns, "link", "set", "lo", "up"},
		{"ip", "-n", ns, "addr", "replace", ip + "/" + prefix, "dev", "eth0"},
		{"ip", "-n", ns, "link", "set", "eth0", "up"},
		{"ip", "-n", ns, "route", "replace", "default", "via", hostIP},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			return err
		}
	}
	return nil
}

// tearDownPodNetwork deletes the namespace (which deletes its veth pair) and the
// files `ip netns exec` binds over /etc.
func tearDownPodNetwork(uid string) error {
	ns := netnsName(uid)
	var errs []error
	if _, err := os.Stat("/run/netns/" + ns); err == nil {
		errs = append(errs, run("ip", "netns", "del", ns))
	}
	errs = append(errs, os.RemoveAll(filepath.Join("/etc/netns", ns)))
	return errors.Join(errs...)
}

// RemoveNetworkNamespaces removes the network namespaces of every pod the node in dir
// recorded; `down` calls it after the processes are gone.
func RemoveNetworkNamespaces(dir string) error {
	entries, err := os.ReadDir(filepath.Join(dir, "pods"))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		errs = append(errs, tearDownPodNetwork(e.Name()))
	}
	return errors.Join(errs...)
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput() // #nosec G204 -- fixed programs (ip)
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
