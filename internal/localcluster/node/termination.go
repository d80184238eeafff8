package node

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"

	corev1 "k8s.io/api/core/v1"
)

// Termination messages as the kubelet reports them: the container writes a file at
// its terminationMessagePath (default /dev/termination-log), and when it exits the
// file's content becomes status.containerStatuses[].state.terminated.message. The
// file is the node's (pods/<uid>/termination/<container>), bound at the path in the
// container's mount namespace, so the process sees the path its spec names.

// The kubelet's limits (pkg/kubelet/container): the file's last 4096 bytes; for
// FallbackToLogsOnError, the log's last 80 lines, of those the last 2048 bytes.
const (
	maxTerminationMessage = 4096
	maxFallbackLogLines   = 80
	maxFallbackLogBytes   = 2048
)

func (p *pod) terminationPath(container string) string {
	return filepath.Join(p.dir, "termination", container)
}

// terminationFile creates the container's termination-message file, writable by
// the user it runs as (the kubelet's is 0666 too), and returns its path; "" when
// the container has no terminationMessagePath.
func (p *pod) terminationFile(c *corev1.Container, sec *Security) (string, error) {
	if c.TerminationMessagePath == "" {
		return "", nil
	}
	path := p.terminationPath(c.Name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil { // #nosec G301 -- the container's user reaches its file
		return "", err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0o666) // #nosec G302 G304 -- the container writes it
	if err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	if err := os.Chmod(path, 0o666); err != nil { // #nosec G302 -- against the umask
		return "", err
	}
	if sec != nil {
		if err := os.Chown(path, int(sec.UID), int(sec.GID)); err != nil {
			return "", err
		}
	}
	return path, nil
}

func truncateIfExists(path string) error {
	if err := os.Truncate(path, 0); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// terminationMessage is what the kubelet puts in a terminated state's message: the
// last 4096 bytes of the termination-message file, or, with FallbackToLogsOnError,
// the tail of the log when the file is empty and the container failed.
func (p *pod) terminationMessage(c *corev1.Container, code int) string {
	if c == nil {
		return ""
	}
	msg := ""
	if c.TerminationMessagePath != "" {
		if data, err := readLast(p.terminationPath(c.Name), maxTerminationMessage); err == nil {
			msg = string(data)
		}
	}
	if msg == "" && code != 0 && c.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError {
		msg = logTail(p.logPath(c.Name, false))
	}
	return msg
}

// readLast reads at most the last n bytes of a file.
func readLast(path string, n int64) ([]byte, error) {
	f, err := os.Open(path) // #nosec G304 -- the node's own file
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if st.Size() > n {
		if _, err := f.Seek(-n, io.SeekEnd); err != nil {
			return nil, err
		}
	}
	return io.ReadAll(io.LimitReader(f, n))
}

// logTail is the kubelet's fallback message: the log's last 80 lines, and of those
// the last 2048 bytes.
func logTail(path string) string {
	// 80 lines fit in far less than this unless they are very long, and then only
	// the last 2048 bytes count anyway.
	data, err := readLast(path, 64*1024)
	if err != nil {
		return ""
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	if len(lines) > 0 && len(lines[len(lines)-1]) == 0 {
		lines = lines[:len(lines)-1]
	}
	if len(lines) > maxFallbackLogLines {
		lines = lines[len(lines)-maxFallbackLogLines:]
	}
	tail := bytes.Join(lines, nil)
	if len(tail) > maxFallbackLogBytes {
		tail = tail[len(tail)-maxFallbackLogBytes:]
	}
	return string(tail)
}
