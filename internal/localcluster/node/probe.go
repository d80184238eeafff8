package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probe runs the container's startup, readiness and liveness probes for one run of
// its process, as the kubelet's prober does: startup first, then the other two; a
// failed startup or liveness probe kills the process (the restart policy decides the
// rest); readiness drives the Ready condition.
func (p *pod) probe(ctx context.Context, c *corev1.Container) {
	if c.StartupProbe != nil {
		if !p.runProbe(ctx, c, c.StartupProbe, nil) {
			p.livenessKill(ctx, c, "startup")
			return
		}
		p.mu.Lock()
		p.container(c.Name).Started = true
		p.mu.Unlock()
		p.changed()
	}
	if c.ReadinessProbe == nil {
		p.setReady(c.Name, true)
	} else {
		go p.runProbe(ctx, c, c.ReadinessProbe, func(ok bool) { p.setReady(c.Name, ok) })
	}
	if c.LivenessProbe != nil {
		if !p.runProbe(ctx, c, c.LivenessProbe, nil) {
			p.livenessKill(ctx, c, "liveness")
		}
	}
}

func (p *pod) livenessKill(ctx context.Context, c *corev1.Container, which string) {
	if ctx.Err() != nil {
		return
	}
	p.n.log.Info(which+" probe failed; killing the container", "pod", p.st.Pod.Name, "container", c.Name)
	grace := 30 * time.Second
	if s := p.st.Pod.Spec.TerminationGracePeriodSeconds; s != nil {
		grace = time.Duration(*s) * time.Second
	}
	p.kill(c.Name, grace)
}

// runProbe probes every period after the initial delay, until ctx ends:
//   - readiness (report set): reports each change — ready after successThreshold
//     successes in a row, not ready after failureThreshold failures in a row;
//   - startup (report nil, pr is the startup probe): true at the first success;
//   - liveness (report nil): returns only when failureThreshold failures follow each
//     other (false) or ctx ends.
func (p *pod) runProbe(ctx context.Context, c *corev1.Container, pr *corev1.Probe, report func(bool)) bool {
	period := time.Duration(max(pr.PeriodSeconds, 1)) * time.Second
	timeout := time.Duration(max(pr.TimeoutSeconds, 1)) * time.Second
	failThreshold := max(pr.FailureThreshold, 3)
	if pr.FailureThreshold > 0 {
		failThreshold = pr.FailureThreshold
	}
	successThreshold := max(pr.SuccessThreshold, 1)
	startup := report == nil && pr == c.StartupProbe
	select {
	case <-ctx.Done():
		return false
	case <-time.After(time.Duration(pr.InitialDelaySeconds) * time.Second):
	}
	var fails, successes int32
	last := false
	for {
		err := p.check(ctx, c, pr, timeout)
		if ctx.Err() != nil {
			return false
		}
		if err == nil {
			fails, successes = 0, successes+1
			if startup {
				return true
			}
			if report != nil && !last && successes >= successThreshold {
				last = true
				report(true)
			}
		} else {
			successes, fails = 0, fails+1
			if fails >= failThreshold {
				if report == nil {
					return false
				}
				if last || fails == failThreshold {
					last = false
					report(false)
				}
			}
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(period):
		}
	}
}

func (p *pod) setReady(name string, ready bool) {
	p.mu.Lock()
	cs := p.container(name)
	changed := cs.Ready != ready && cs.Running
	if changed {
		cs.Ready = ready
	}
	p.mu.Unlock()
	if changed {
		p.changed()
	}
}

// check runs one probe.
func (p *pod) check(ctx context.Context, c *corev1.Container, pr *corev1.Probe, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	p.mu.Lock()
	ip, pid := p.st.IP, p.container(c.Name).Pid
	spec := p.spec[c.Name]
	p.mu.Unlock()
	switch {
	case pr.HTTPGet != nil:
		return httpProbe(ctx, c, pr.HTTPGet, ip)
	case pr.TCPSocket != nil:
		port, err := portNumber(c, pr.TCPSocket.Port)
		if err != nil {
			return err
		}
		host := pr.TCPSocket.Host
		if host == "" {
			host = ip
		}
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return err
		}
		return conn.Close()
	case pr.Exec != nil:
		return execProbe(ctx, pid, pr.Exec.Command, spec)
	case pr.GRPC != nil:
		return errors.New("gRPC probes are not supported on this node")
	}
	return errors.New("probe has no handler")
}

func httpProbe(ctx context.Context, c *corev1.Container, g *corev1.HTTPGetAction, ip string) error {
	port, err := portNumber(c, g.Port)
	if err != nil {
		return err
	}
	host := g.Host
	if host == "" {
		host = ip
	}
	scheme := strings.ToLower(string(g.Scheme))
	if scheme == "" {
		scheme = "http"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+net.JoinHostPort(host, strconv.Itoa(port))+g.Path, nil)
	if err != nil {
		return err
	}
	for _, h := range g.HTTPHeaders {
		req.Header.Add(h.Name, h.Value)
	}
	req.Header.Set("User-Agent", "kube-probe/1.37")
	// The kubelet does not verify the certificate of an HTTPS probe either.
	// #nosec G402 -- as the kubelet's prober
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true, TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode >= 400 {
		return fmt.Errorf("HTTP probe: %s", resp.Status)
	}
	return nil
}

// execProbe runs the command inside the container's namespaces (nsenter into the
// shim's mount and network namespaces), with the container's environment, user and
// privileges (setpriv), as a runtime's exec does.
func execProbe(ctx context.Context, pid int, command []string, spec *ShimSpec) error {
	if pid == 0 || spec == nil {
		return errors.New("container not running")
	}
	args := append([]string{"-t", strconv.Itoa(pid), "-m", "-n", "--"}, setprivArgs(spec.Security)...)
	args = append(args, command...)
	cmd := exec.CommandContext(ctx, "nsenter", args...) // #nosec G204 -- the pod's probe command
	cmd.Env = spec.Env
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// portNumber resolves a probe's port, which may name one of the container's ports.
func portNumber(c *corev1.Container, port intstr.IntOrString) (int, error) {
	if port.Type == intstr.Int {
		return port.IntValue(), nil
	}
	for _, cp := range c.Ports {
		if cp.Name == port.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("container %s has no port named %s", c.Name, port.StrVal)
}

// setprivArgs is the setpriv command that gives a process the container's user and
// privileges; none for a spec without them.
func setprivArgs(sec *Security) []string {
	if sec == nil {
		return nil
	}
	groups := "--clear-groups"
	if len(sec.Groups) > 0 {
		ids := make([]string, len(sec.Groups))
		for i, g := range sec.Groups {
			ids[i] = strconv.FormatUint(uint64(g), 10)
		}
		groups = "--groups=" + strings.Join(ids, ",")
	}
	bounding := "-all"
	for _, c := range sec.Capabilities {
		bounding += ",+" + strings.ToLower(capabilityNames[c])
	}
	args := []string{"setpriv", "--reuid=" + strconv.FormatUint(uint64(sec.UID), 10),
		"--regid=" + strconv.FormatUint(uint64(sec.GID), 10), groups, "--inh-caps=-all", "--bounding-set=" + bounding}
	if sec.NoNewPrivs {
		args = append(args, "--no-new-privs")
	}
	return append(args, "--")
}
