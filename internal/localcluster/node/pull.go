package node

import (
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// awaitImage holds a container whose image cannot be "pulled" (no entry in the
// image map) as the kubelet holds one whose pull failed: waiting with reason
// ErrImagePull, then ImagePullBackOff, with the kubelet's events, and a new pull
// after each back-off, so an image loaded meanwhile (`localcluster load`) runs. It
// returns false if the pod goes away first.
func (p *pod) awaitImage(c *corev1.Container) bool {
	// The kubelet backs off from 10 s to 5 min; 1 s to 30 s, as for crash loops.
	backoff := time.Second
	for {
		msg := p.pullFailure(c.Name)
		if msg == "" {
			return true
		}
		p.setWaitingMessage(c.Name, "ErrImagePull", msg)
		p.event(corev1.EventTypeWarning, "Failed", "%s", capitalise(msg))
		p.event(corev1.EventTypeWarning, "Failed", "Error: ErrImagePull")
		if !p.sleep(time.Second) {
			return false
		}
		p.setWaitingMessage(c.Name, "ImagePullBackOff", fmt.Sprintf("Back-off pulling image %q: ErrImagePull: %s", c.Image, msg))
		p.event(corev1.EventTypeNormal, "BackOff", "Back-off pulling image %q", c.Image)
		p.event(corev1.EventTypeWarning, "Failed", "Error: ImagePullBackOff")
		if !p.sleep(backoff) {
			return false
		}
		backoff = min(backoff*2, 30*time.Second)
		p.pullAgain(c)
	}
}

// pullAgain builds the container's spec again, now that its image may be in the
// map; what still fails is recorded where supervise looks for it.
func (p *pod) pullAgain(c *corev1.Container) {
	p.mu.Lock()
	pd, vols := p.setUpPod, p.vols
	p.mu.Unlock()
	spec, err := p.shimSpec(pd, c, vols)
	p.mu.Lock()
	defer p.mu.Unlock()
	var cfg *configError
	switch pull, ok := isImageNotPulled(err); {
	case ok:
		p.pullFailed[c.Name] = pull.Error()
	case errors.As(err, &cfg):
		delete(p.pullFailed, c.Name)
		p.refused[c.Name] = cfg.msg
	case err != nil:
		// A Secret gone since the pod was set up, say: the pull goes on failing
		// with that reason rather than the container starting without it.
		p.pullFailed[c.Name] = err.Error()
	default:
		delete(p.pullFailed, c.Name)
		p.spec[c.Name] = spec
	}
}

func (p *pod) pullFailure(name string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pullFailed[name]
}

// sleep waits d unless the pod is deleted or the node stops meanwhile.
func (p *pod) sleep(d time.Duration) bool {
	select {
	case <-p.ctx.Done():
		return false
	case <-time.After(d):
		return !p.isDeleting()
	}
}

// event records an event on the pod, as the kubelet does (nowhere in unit tests).
func (p *pod) event(eventType, reason, format string, args ...any) {
	if p.n.events == nil {
		return
	}
	p.mu.Lock()
	ref := p.st.Pod.DeepCopy()
	p.mu.Unlock()
	p.n.events.Eventf(ref, eventType, reason, format, args...)
}

func capitalise(s string) string {
	if s == "" || s[0] < 'a' || s[0] > 'z' {
		return s
	}
	return string(s[0]-'a'+'A') + s[1:]
}
