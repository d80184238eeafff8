package node

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// withStatus returns the pod with its whole status: virtual-kubelet writes the status
// the provider returns as is, so every field a kubelet sets is set here (phase,
// conditions with transition times, addresses, start time, container statuses).
func (p *pod) withStatus() *corev1.Pod {
	p.mu.Lock()
	defer p.mu.Unlock()
	pd := p.st.Pod.DeepCopy()
	st := &pd.Status
	st.HostIP, st.HostIPs = p.n.cfg.HostIP, []corev1.HostIP{{IP: p.n.cfg.HostIP}}
	if p.st.IP != "" {
		st.PodIP, st.PodIPs = p.st.IP, []corev1.PodIP{{IP: p.st.IP}}
	}
	st.StartTime = &p.st.StartTime
	// QOSClass is set by the API server at creation and immutable: keep it.
	st.InitContainerStatuses = p.containerStatuses(pd.Spec.InitContainers)
	st.ContainerStatuses = p.containerStatuses(pd.Spec.Containers)
	st.Phase = p.phase()
	ready := st.Phase == corev1.PodRunning && p.allReady()
	if ready != p.st.Ready {
		p.st.Ready, p.st.ReadyChanged = ready, metav1.Now()
	}
	st.Conditions = []corev1.PodCondition{
		condition(corev1.PodScheduled, true, p.st.StartTime),
		condition(corev1.PodInitialized, p.st.Initialized || len(pd.Spec.InitContainers) == 0, p.st.StartTime),
		condition(corev1.ContainersReady, ready, p.st.ReadyChanged),
		condition(corev1.PodReady, ready, p.st.ReadyChanged),
	}
	if p.st.Waiting != "" {
		st.Message, st.Reason = p.st.Waiting, "ContainerCreating"
	} else {
		st.Message, st.Reason = "", ""
	}
	return pd
}

func condition(t corev1.PodConditionType, ok bool, at metav1.Time) corev1.PodCondition {
	s := corev1.ConditionFalse
	if ok {
		s = corev1.ConditionTrue
	}
	return corev1.PodCondition{Type: t, Status: s, LastTransitionTime: at}
}

func (p *pod) allReady() bool {
	for _, c := range p.st.Pod.Spec.Containers {
		cs := p.st.Containers[c.Name]
		if cs == nil || !cs.Ready || !cs.Running {
			return false
		}
	}
	return true
}

// phase is Pending until the containers first run; Succeeded or Failed once every
// container has exited for good; Running otherwise.
func (p *pod) phase() corev1.PodPhase {
	// A failed init container that is not run again (restartPolicy Never) fails the
	// pod: the containers never start.
	if !p.st.Initialized {
		for _, c := range p.st.Pod.Spec.InitContainers {
			if code, ok := exitOf(p.st.Containers[c.Name]); ok && code != 0 && !p.restarts(code, true) {
				return corev1.PodFailed
			}
		}
	}
	allDone, anyFailed := true, false
	for _, c := range p.st.Pod.Spec.Containers {
		cs := p.st.Containers[c.Name]
		if cs == nil || (!cs.Running && cs.Terminated == nil) {
			return corev1.PodPending
		}
		code, exited := exitOf(cs)
		switch {
		case !exited, p.restarts(code, false):
			allDone = false
		case code != 0:
			anyFailed = true
		}
	}
	if !allDone {
		return corev1.PodRunning
	}
	if anyFailed {
		return corev1.PodFailed
	}
	return corev1.PodSucceeded
}

// terminalPhase is the phase of a pod whose containers were stopped for good (it
// was deleted): Succeeded when every container exited 0, Failed otherwise.
func (p *pod) terminalPhase() corev1.PodPhase {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.st.Pod.Spec.Containers {
		if code, ok := exitOf(p.st.Containers[c.Name]); !ok || code != 0 {
			return corev1.PodFailed
		}
	}
	return corev1.PodSucceeded
}

func (p *pod) containerStatuses(list []corev1.Container) []corev1.ContainerStatus {
	out := make([]corev1.ContainerStatus, 0, len(list))
	for _, c := range list {
		cs := p.st.Containers[c.Name]
		s := corev1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: "process://" + c.Image}
		if cs == nil {
			s.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating", Message: p.st.Waiting}
			out = append(out, s)
			continue
		}
		s.RestartCount, s.Ready = cs.RestartCount, cs.Ready && cs.Running
		started := cs.Started && cs.Running
		s.Started = &started
		switch {
		case cs.Running:
			s.ContainerID = containerID(cs.Pid)
			s.State.Running = &corev1.ContainerStateRunning{StartedAt: cs.StartedAt}
		case cs.Waiting != "":
			s.State.Waiting = &corev1.ContainerStateWaiting{Reason: cs.Waiting, Message: cs.WaitingMessage}
		case cs.Terminated != nil:
			s.State.Terminated = cs.Terminated.DeepCopy()
		default:
			s.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
		}
		// The last termination is the instance before the current one: the last
		// exit while the container waits or runs again, the one before it once it
		// has exited for good.
		if last := cs.Terminated; last != nil && s.State.Terminated == nil {
			s.LastTerminationState.Terminated = last.DeepCopy()
		} else if prev := cs.Previous; prev != nil && s.State.Terminated != nil {
			s.LastTerminationState.Terminated = prev.DeepCopy()
		}
		out = append(out, s)
	}
	return out
}
