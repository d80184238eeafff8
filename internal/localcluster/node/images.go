package node

import (
	"fmt"
	"os"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// ImageMap says which local executable stands for which image: the image's
// ENTRYPOINT, CMD and environment, as a container runtime reads them from the image.
type ImageMap struct {
	Images []Image `json:"images"`
}

// Image is one entry of the map.
type Image struct {
	// Image is the repository, matched with any tag or digest ("postgres" also
	// matches docker.io/library/postgres).
	Image string `json:"image"`
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
}

const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// LoadImageMap reads an image map file.
func LoadImageMap(path string) (*ImageMap, error) {
	data, err := os.ReadFile(path) // #nosec G304 -- a path the operator of the tool gave
	if err != nil {
		return nil, err
	}
	var m ImageMap
	if err := yaml.UnmarshalStrict([]byte(os.ExpandEnv(string(data))), &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for i, img := range m.Images {
		if img.Image == "" || len(img.Command) == 0 {
			return nil, fmt.Errorf("%s: images[%d]: image and command are required", path, i)
		}
		if _, err := parseImageUser(img.User); err != nil {
			return nil, fmt.Errorf("%s: images[%d]: %w", path, i, err)
		}
	}
	return &m, nil
}

// repository strips the tag or digest and the default registry from an image reference.
func repository(ref string) string {
	if i := strings.IndexByte(ref, '@'); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndexByte(ref, ':'); i > strings.LastIndexByte(ref, '/') {
		ref = ref[:i]
	}
	ref = strings.TrimPrefix(ref, "docker.io/")
	return strings.TrimPrefix(ref, "library/")
}

// resolve returns the argv, the image environment and the image's user of a
// container, as a runtime combines the image's ENTRYPOINT/CMD with the container's
// command/args.
func (m *ImageMap) resolve(c *corev1.Container) (argv, env []string, user *imageUser, err error) {
	repo := repository(c.Image)
	for _, img := range m.Images {
		if repository(img.Image) != repo {
			continue
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
	return nil, nil, nil, fmt.Errorf("image %q is not in the node's image map", c.Image)
}
