package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/distribution/reference"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// ImageMap says which local executable stands for which image: the image's
// ENTRYPOINT, CMD and environment, as a container runtime reads them from the image
// it pulled. A reference resolves only to the entry "pulled" for exactly it, so two
// tags of one repository can be two different programs, as two builds are.
type ImageMap struct {
	Images []Image `json:"images"`
}

// Image is one entry of the map.
type Image struct {
	// Image is the exact reference the entry stands for, normalised as a runtime
	// does: "postgres:15" is docker.io/library/postgres:15, "busybox" is
	// busybox:latest. A reference with a digest matches only that digest.
	Image string `json:"image"`
	// AnyTag makes the entry stand for every tag and digest of Image's repository
	// (Image then names no tag): for stand-ins such as a shell, whose version no
	// test depends on. Prefer exact references.
	AnyTag bool `json:"anyTag,omitempty"`
	// Command is the image's ENTRYPOINT; ${VAR} is expanded from the node's
	// environment when the map is read.
	Command []string `json:"command"`
	// Args is the image's CMD.
	Args []string `json:"args,omitempty"`
	// Env is the image's environment (NAME=value).
	Env []string `json:"env,omitempty"`
	// User is the image's USER, "uid" or "uid:gid" by number; root when empty. A
	// container without runAsUser runs as it, and runAsNonRoot refuses root.
	User string `json:"user,omitempty"`

	// key is the normalised reference (or repository, for AnyTag).
	key string
	// from is the file the entry came from, for error messages.
	from string
}

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// ExtraImagesDir is the directory beside a node's image map whose *.yaml files add
// entries to it: images loaded into a running node (`localcluster load`), as
// `kind load` does, read each time a container's image is resolved.
func ExtraImagesDir(imageMap string) string {
	return filepath.Join(filepath.Dir(imageMap), "images.d")
}

// LoadImageMap reads an image map file and the files of its ExtraImagesDir. Two
// entries for one reference are an error: which program would run is not a guess
// the node should make.
func LoadImageMap(path string) (*ImageMap, error) {
	extra, err := filepath.Glob(filepath.Join(ExtraImagesDir(path), "*.yaml"))
	if err != nil {
		return nil, err
	}
	slices.Sort(extra)
	return LoadImageFiles(append([]string{path}, extra...)...)
}

// LoadImageFiles reads image-map files as one map.
func LoadImageFiles(files ...string) (*ImageMap, error) {
	m := &ImageMap{}
	for _, f := range files {
		more, err := readImageFile(f)
		if err != nil {
			return nil, err
		}
		m.Images = append(m.Images, more.Images...)
	}
	return m, m.checkUnique()
}

func readImageFile(path string) (*ImageMap, error) {
	data, err := os.ReadFile(path) // #nosec G304 -- a path the operator of the tool gave
	if err != nil {
		return nil, err
	}
	var m ImageMap
	if err := yaml.UnmarshalStrict([]byte(os.ExpandEnv(string(data))), &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for i := range m.Images {
		img := &m.Images[i]
		img.from = path
		if img.Image == "" || len(img.Command) == 0 {
			return nil, fmt.Errorf("%s: images[%d]: image and command are required", path, i)
		}
		if img.key, err = entryKey(img.Image, img.AnyTag); err != nil {
			return nil, fmt.Errorf("%s: images[%d].image: %w", path, i, err)
		}
		if _, err := parseImageUser(img.User); err != nil {
			return nil, fmt.Errorf("%s: images[%d].user: %w", path, i, err)
		}
	}
	return &m, nil
}

func (m *ImageMap) checkUnique() error {
	seen := map[string]*Image{}
	for i := range m.Images {
		img := &m.Images[i]
		if prev, ok := seen[img.key]; ok {
			return fmt.Errorf("image %s is in %s and in %s: one reference, one program", img.Image, prev.from, img.from)
		}
		seen[img.key] = img
	}
	return nil
}

// entryKey normalises an entry's reference; an AnyTag entry's is its repository.
func entryKey(ref string, anyTag bool) (string, error) {
	if !anyTag {
		return normalise(ref)
	}
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return "", err
	}
	if !reference.IsNameOnly(named) {
		return "", fmt.Errorf("%q has a tag or digest, and anyTag says every tag", ref)
	}
	return named.Name(), nil
}

// normalise makes a reference what a runtime pulls: the default registry and
// library/ spelled out, :latest when there is no tag, and only the digest when
// there is one (a runtime pulls by digest and ignores the tag).
func normalise(ref string) (string, error) {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return "", err
	}
	return named.String(), nil
}

// errImageNotPulled is a reference the node cannot "pull": it has no entry.
type errImageNotPulled struct{ image, why string }

func (e *errImageNotPulled) Error() string {
	return fmt.Sprintf("failed to pull image %q: %s", e.image, e.why)
}

// Lookup finds the entry "pulled" for an image reference; the error says why none is.
func (m *ImageMap) Lookup(image string) (*Image, error) {
	key, err := normalise(image)
	if err != nil {
		// What a runtime says of a reference it cannot parse: the pull fails.
		return nil, &errImageNotPulled{image: image, why: "invalid reference format: " + err.Error()}
	}
	named, _ := reference.ParseNormalizedNamed(image)
	for i := range m.Images {
		img := &m.Images[i]
		if img.key == key || (img.AnyTag && named != nil && img.key == named.Name()) {
			return img, nil
		}
	}
	return nil, &errImageNotPulled{image: image,
		why: key + " is not in the local node's image map (add it with `localcluster load`; see docs/local-cluster.md)"}
}

// resolve returns the argv, the image environment and the image's user of a
// container, as a runtime combines the image's ENTRYPOINT/CMD with the container's
// command/args.
func (m *ImageMap) resolve(c *corev1.Container) (argv, env []string, user *imageUser, err error) {
	img, err := m.Lookup(c.Image)
	if err != nil {
		return nil, nil, nil, err
	}
	env = append([]string{defaultPath}, img.Env...)
	switch {
	case len(c.Command) > 0:
		argv = append(append(argv, c.Command...), c.Args...)
	case len(c.Args) > 0:
		argv = append(append(argv, img.Command...), c.Args...)
	default:
		argv = append(append(argv, img.Command...), img.Args...)
	}
	user, err = parseImageUser(img.User)
	return argv, env, user, err
}

// isImageNotPulled reports whether err is a failed "pull".
func isImageNotPulled(err error) (*errImageNotPulled, bool) {
	var e *errImageNotPulled
	ok := errors.As(err, &e)
	return e, ok
}
