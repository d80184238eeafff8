// Command localcluster runs a small real Kubernetes cluster on this machine, whose
// one node runs pods as local processes (package internal/localcluster). It is a
// development and test tool for `make demo` and `make test-e2e`, never shipped in an
// image and not a production runtime.
//
//	localcluster up [--dir D] [--assets A] [--images F] [--bin B] [--load F]...   start (or report) the cluster
//	localcluster load [--dir D] [--bin B] FILE...                    add image-map entries to the node (as kind load)
//	localcluster status [--dir D]                                    what runs
//	localcluster down [--dir D]                                      stop everything, remove D
//	localcluster port-forward [--dir D] -n NS svc/NAME LOCAL:PORT    reach a Service from the host
//
// `node` and `shim` are the node process and the per-container shim; up starts them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"

	"github.com/kubeoauth/kubeoauth/internal/localcluster"
	"github.com/kubeoauth/kubeoauth/internal/localcluster/netsvc"
	"github.com/kubeoauth/kubeoauth/internal/localcluster/node"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch os.Args[1] {
	case "up":
		err = up(ctx, os.Args[2:])
	case "load":
		err = load(os.Args[2:])
	case "down":
		err = down(os.Args[2:])
	case "status":
		err = status(os.Args[2:])
	case "port-forward":
		err = portForward(ctx, os.Args[2:])
	case "node":
		err = runNode(ctx, os.Args[2:])
	case "shim":
		if len(os.Args) != 3 {
			usage()
		}
		os.Exit(node.Shim(os.Args[2]))
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "localcluster "+os.Args[1]+":", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: localcluster up|load|status|down|port-forward [flags]  (see -h of each)")
	os.Exit(2)
}

func dirFlag(fs *flag.FlagSet) *string {
	return fs.String("dir", localcluster.DefaultDir(), "the cluster's state directory (env KUBEOAUTH_CLUSTER_DIR)")
}

func up(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("up", flag.ExitOnError)
	dir := dirFlag(fs)
	assets := fs.String("assets", os.Getenv("KUBEBUILDER_ASSETS"),
		"directory of etcd, kube-apiserver, kube-controller-manager, kube-scheduler (hack/control-plane.sh prints it)")
	images := fs.String("images", "hack/localcluster/images.yaml", "the node's image map")
	bin := binFlag(fs)
	var extra []string
	fs.Func("load", "an image-map file whose entries are added to the node's (repeatable; see `localcluster load`)",
		func(f string) error { extra = append(extra, f); return nil })
	_ = fs.Parse(args)
	if os.Geteuid() != 0 {
		return errors.New("the local cluster needs root: it makes a bridge, network and mount namespaces")
	}
	if *assets == "" {
		return errors.New("--assets (or KUBEBUILDER_ASSETS) is required: " +
			"run hack/control-plane.sh etcd kube-apiserver kube-controller-manager kube-scheduler")
	}
	if localcluster.Status(*dir).Running() {
		fmt.Fprintln(os.Stderr, "the local cluster already runs")
		if err := loadImages(*dir, *bin, extra); err != nil {
			return err
		}
		printUsage(*dir)
		return nil
	}
	self, imageMap, err := stage(*dir, *images, *bin)
	if err != nil {
		return err
	}
	if err := loadImages(*dir, *bin, extra); err != nil {
		return err
	}
	err = localcluster.Up(ctx, localcluster.Options{Dir: *dir, Assets: *assets, Self: self, Images: imageMap, Progress: os.Stderr})
	if err != nil {
		return fmt.Errorf("%w\nlogs: %s", err, filepath.Join(*dir, "logs"))
	}
	printUsage(*dir)
	return nil
}

func printUsage(dir string) {
	kc := localcluster.AdminKubeconfig(dir)
	fmt.Printf(`The local cluster runs (API server %s, node %s).
  export KUBECONFIG=%s
  kubectl get nodes
Logs: %s. Stop it with: localcluster down --dir %s
`, localcluster.APIServerURL(), localcluster.NodeName, kc, filepath.Join(dir, "logs"), dir)
}

// stage copies this executable into the cluster's directory (the node and the shims
// run it after up returns, and a rebuild must not pull it from under them) and writes
// the image map with ${KUBEOAUTH_BIN} and ${KUBEOAUTH_REPO} expanded.
func stage(dir, images, bin string) (self, imageMap string, err error) {
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o700); err != nil {
		return "", "", err
	}
	exe, err := os.Executable()
	if err != nil {
		return "", "", err
	}
	self = filepath.Join(dir, "bin", "localcluster")
	if exe != self {
		if err := copyFile(exe, self, 0o700); err != nil {
			return "", "", err
		}
	}
	imageMap = filepath.Join(dir, "images.yaml")
	if err := expandImages(images, imageMap, bin); err != nil {
		return "", "", err
	}
	if _, err := node.LoadImageMap(imageMap); err != nil {
		return "", "", err
	}
	return self, imageMap, nil
}

// expandImages writes the image-map file from to to with ${KUBEOAUTH_BIN} and
// ${KUBEOAUTH_REPO} expanded.
func expandImages(from, to, bin string) error {
	absBin, err := filepath.Abs(bin)
	if err != nil {
		return err
	}
	repo, err := filepath.Abs(".")
	if err != nil {
		return err
	}
	text, err := os.ReadFile(from) // #nosec G304 -- a path the user gave
	if err != nil {
		return err
	}
	expanded := os.Expand(string(text), func(k string) string {
		switch k {
		case "KUBEOAUTH_BIN":
			return absBin
		case "KUBEOAUTH_REPO":
			return repo
		}
		return os.Getenv(k)
	})
	return os.WriteFile(to, []byte(expanded), 0o600) // #nosec G703 -- the user's own --dir
}

// load adds image-map entries to a cluster's node, as `kind load` puts an image on
// a kind node: pods created afterwards, and pods waiting in ImagePullBackOff at
// their next pull, find them. A file loaded again under the same name replaces
// its earlier entries.
func load(args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	dir := dirFlag(fs)
	bin := binFlag(fs)
	_ = fs.Parse(args)
	if fs.NArg() == 0 {
		return errors.New("usage: localcluster load [--dir D] [--bin B] FILE... (image-map files: images: [{image, command, ...}])")
	}
	return loadImages(*dir, *bin, fs.Args())
}

func loadImages(dir, bin string, files []string) error {
	imageMap := filepath.Join(dir, "images.yaml")
	if len(files) == 0 {
		return nil
	}
	if _, err := os.Stat(imageMap); err != nil {
		return fmt.Errorf("no cluster in %s to load images into (start it with localcluster up): %w", dir, err)
	}
	extra := node.ExtraImagesDir(imageMap)
	if err := os.MkdirAll(extra, 0o700); err != nil {
		return err
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), filepath.Ext(f)) + ".yaml"
		to := filepath.Join(extra, name)
		// Staged beside, checked with the map it joins, then renamed in: the node
		// never reads a half-written or conflicting file.
		tmp := filepath.Join(dir, ".load-"+name)
		if err := expandImages(f, tmp, bin); err != nil {
			return err
		}
		if err := checkLoad(imageMap, tmp, to); err != nil {
			_ = os.Remove(tmp)
			// Named as the user knows it, not by its staging copy.
			return fmt.Errorf("loading %s: %s", f, strings.ReplaceAll(err.Error(), tmp, f))
		}
		if err := os.Rename(tmp, to); err != nil {
			return err
		}
		fmt.Fprintln(os.Stderr, "loaded the images of", f)
	}
	return nil
}

// checkLoad reads the node's map as it will be with tmp in place of to.
func checkLoad(imageMap, tmp, to string) error {
	files := []string{imageMap}
	existing, err := filepath.Glob(filepath.Join(node.ExtraImagesDir(imageMap), "*.yaml"))
	if err != nil {
		return err
	}
	for _, e := range existing {
		if e != to {
			files = append(files, e)
		}
	}
	_, err = node.LoadImageFiles(append(files, tmp)...)
	return err
}

func binFlag(fs *flag.FlagSet) *string {
	return fs.String("bin", "bin", "directory of the binaries the image map names (${KUBEOAUTH_BIN})")
}

func copyFile(from, to string, mode os.FileMode) error {
	in, err := os.Open(from) // #nosec G304 -- this executable
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	tmp := to + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode) // #nosec G304 -- our state dir
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		_ = out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, to)
}

func down(args []string) error {
	fs := flag.NewFlagSet("down", flag.ExitOnError)
	dir := dirFlag(fs)
	_ = fs.Parse(args)
	if err := localcluster.Down(*dir, os.Stderr); err != nil {
		return err
	}
	fmt.Println("The local cluster is stopped and", *dir, "removed.")
	return nil
}

func status(args []string) error {
	fs := flag.NewFlagSet("status", flag.ExitOnError)
	dir := dirFlag(fs)
	_ = fs.Parse(args)
	st := localcluster.Status(*dir)
	fmt.Print(st)
	if !st.Running() {
		return errors.New("the local cluster is not (completely) running")
	}
	fmt.Println("KUBECONFIG=" + localcluster.AdminKubeconfig(*dir))
	return nil
}

func portForward(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("port-forward", flag.ExitOnError)
	dir := dirFlag(fs)
	ns := fs.String("n", "default", "namespace of the Service")
	background := fs.Bool("background", false, "run in the background, recorded with the cluster (down stops it)")
	_ = fs.Parse(args)
	if fs.NArg() != 2 || !strings.HasPrefix(fs.Arg(0), "svc/") {
		return errors.New("usage: localcluster port-forward -n NAMESPACE svc/NAME [ADDRESS:]LOCALPORT:SERVICEPORT")
	}
	svc := strings.TrimPrefix(fs.Arg(0), "svc/")
	spec := fs.Arg(1)
	i := strings.LastIndexByte(spec, ':')
	if i < 0 {
		return errors.New("the port is LOCALPORT:SERVICEPORT, for example 4444:80")
	}
	local := spec[:i]
	if !strings.Contains(local, ":") {
		local = "127.0.0.1:" + local
	}
	port, err := strconv.ParseInt(spec[i+1:], 10, 32)
	if err != nil {
		return fmt.Errorf("service port %q: %w", spec[i+1:], err)
	}
	if *background {
		return localcluster.StartBackground(ctx, *dir, "port-forward-"+strings.ReplaceAll(local, ":", "-"),
			append([]string{"port-forward", "--dir", *dir, "-n", *ns}, fs.Args()...), local)
	}
	c, err := localcluster.AdminClient(*dir)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", local)
	if err != nil {
		return err
	}
	fmt.Printf("Forwarding %s to svc/%s port %d in %s (ready endpoints, re-resolved per connection)\n", ln.Addr(), svc, port, *ns)
	return netsvc.PortForward(ctx, c, *ns, svc, int32(port), ln, stderrLogger())
}

func runNode(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("node", flag.ExitOnError)
	dir := dirFlag(fs)
	images := fs.String("images", "", "the image map")
	_ = fs.Parse(args)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	pki := func(f string) string { return filepath.Join(*dir, "pki", f) }
	return node.Run(ctx, node.Config{
		Dir: filepath.Join(*dir, "node"), NodeName: localcluster.NodeName,
		HostIP: localcluster.HostIP, PodCIDR: localcluster.PodCIDR, Bridge: localcluster.Bridge,
		APIServerPort: localcluster.APIServerPort, KubeletPort: localcluster.KubeletPort, DNSPort: localcluster.DNSPort,
		Kubeconfig: filepath.Join(*dir, "node.kubeconfig"), AddonsKubeconfig: filepath.Join(*dir, "addons.kubeconfig"),
		ServingCert: pki("node-serving.crt"), ServingKey: pki("node-serving.key"), ClientCA: pki("ca.crt"),
		Images: *images, Self: self, Log: stderrLogger(),
	})
}

func stderrLogger() logr.Logger {
	return funcr.New(func(prefix, args string) { fmt.Fprintln(os.Stderr, prefix, args) }, funcr.Options{})
}
