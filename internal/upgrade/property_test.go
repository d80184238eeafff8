package upgrade

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// sim is a tiny cluster that applies decisions the way a controller and Kubernetes
// would, with faults: actions lost to an operator crash, a status write that fails,
// Jobs that fail, a new image that never gets ready or answers errors, metrics that
// cannot be read, new pods that stop being ready, annotations and image changes at
// random moments.
type sim struct {
	rng      *rand.Rand
	now      time.Time
	round    int
	n        int32
	spec     Spec
	ann      map[string]string
	status   Status
	sts      map[Color]StatefulSet
	pods     map[string]*simPod
	jobs     map[string]*simJob
	counters map[Color]*Counts
	log      []string

	// Faults of this seed.
	broken      map[string]bool // images whose pods never get ready
	errorsPer10 map[string]int64
	failJob     map[JobKind]bool // Jobs of imgB that fail
	copyPlan    bool
	flaps       bool // new-color pods stop being ready now and then
	metricsDown bool
}

type simPod struct {
	Pod
	age, down int
}

type simJob struct {
	kind  JobKind
	state JobState
	exit  int32
}

func newSim(seed uint64) *sim {
	rng := rand.New(rand.NewPCG(seed, 0x6b75_6265))
	n := int32(1 + rng.IntN(3))
	s := &sim{
		rng: rng, now: t0, n: n,
		spec:     Spec{Image: imgB, Replicas: n, Upgrade: settingsFixture(), Database: bundledDB},
		ann:      map[string]string{},
		status:   Status{ActiveColor: Blue},
		sts:      map[Color]StatefulSet{Blue: {Image: imgA, Replicas: n}},
		pods:     map[string]*simPod{},
		jobs:     map[string]*simJob{},
		counters: map[Color]*Counts{Blue: {}, Green: {}},
		broken:   map[string]bool{}, errorsPer10: map[string]int64{}, failJob: map[JobKind]bool{},
	}
	for _, p := range pods(Blue, imgA, int(n), true, all) {
		s.pods[p.Name] = &simPod{Pod: p, age: 10}
	}
	chance := func(p float64) bool { return rng.Float64() < p }
	s.broken[imgB] = chance(0.15)
	if chance(0.15) {
		s.errorsPer10[imgB] = 5
	}
	for _, k := range []JobKind{JobPlan, JobExpand, JobVerify, JobContract, JobCopy, JobCutover, JobCutback} {
		s.failJob[k] = chance(0.06)
	}
	s.copyPlan = chance(0.4)
	s.flaps = chance(0.4)
	s.spec.Upgrade.PauseBeforePromotion = chance(0.2)
	s.spec.Upgrade.Verify = &[]bool{!chance(0.2)}[0]
	return s
}

func (s *sim) observe() Observed {
	o := Observed{Name: "auth", Spec: s.spec, Annotations: cloneMap(s.ann), Status: s.status,
		StatefulSets: cloneMap(s.sts), Jobs: map[JobKind]Job{}, Endpoints: map[Color]int32{}}
	o.Status.Upgrade = s.status.Upgrade.DeepCopy()
	for _, p := range s.pods {
		o.Pods = append(o.Pods, p.Pod)
		if p.Ready && p.Serving {
			o.Endpoints[p.Color]++
		}
	}
	sort.Slice(o.Pods, func(i, j int) bool { return o.Pods[i].Name < o.Pods[j].Name })
	if u := s.status.Upgrade; u != nil {
		for _, k := range []JobKind{JobPlan, JobExpand, JobVerify, JobContract, JobCopy, JobCutover, JobCutback, JobCleanup} {
			if j, ok := s.jobs[UpgradeJobName("auth", u, k)]; ok {
				o.Jobs[k] = Job{State: j.state, Message: "BackoffLimitExceeded", ExitCode: j.exit}
				if j.state == JobSucceeded {
					o.Jobs[k] = Job{State: j.state, Output: map[JobKind]string{JobCopy: copyDone, JobCutover: cutoverDone, JobCutback: cutoverDone}[k]}
				}
			}
		}
		if !s.metricsDown {
			o.Replay = &ReplayFigures{Pending: int64(s.rng.IntN(150)), Lag: time.Duration(s.rng.IntN(7)) * time.Second}
		}
		if o.Jobs[JobPlan].State == JobSucceeded {
			o.Plan = &PlanResult{Mode: ModeShared, SchemaFrom: 3, SchemaTo: 4}
			if s.copyPlan && u.ToImage == imgB {
				o.Plan.Mode = ModeCopy
			}
		}
		if !s.metricsDown {
			o.Metrics = Metrics{"token": *s.counters[Color(u.ToColor)], "admin_events": {Requests: 1000}}
		}
	}
	return o
}

func (s *sim) readyServing() int32 {
	n := int32(0)
	for _, p := range s.pods {
		if p.Ready && p.Serving {
			n++
		}
	}
	return n
}

// faults happen between passes of the operator.
func (s *sim) faults() {
	chance := func(p float64) bool { return s.rng.Float64() < p }
	s.metricsDown = chance(0.05)
	if s.round > 500 {
		s.metricsDown = false
		return
	}
	u := s.status.Upgrade
	if s.flaps && chance(0.08) && u != nil && !terminal(u.Phase) {
		for _, p := range s.pods {
			if p.Color == Color(u.ToColor) && p.Ready {
				p.Ready, p.down = false, 3
				s.log = append(s.log, "fault: "+p.Name+" not ready")
				break
			}
		}
	}
	if u != nil && !terminal(u.Phase) {
		if chance(0.004) {
			s.ann[v1.AnnotationRollback] = u.ID
			s.log = append(s.log, "fault: rollback annotation")
		}
		if u.Phase == v1.UpgradePaused && chance(0.2) {
			s.ann[v1.AnnotationPromote] = u.ID
		}
		if s.round < 300 && s.spec.Image == imgB && chance(0.004) {
			s.spec.Image = []string{imgA, imgC}[s.rng.IntN(2)]
			s.log = append(s.log, "fault: spec.image = "+s.spec.Image)
		}
	}
}

// apply runs a decision like a controller that may crash: the status first (or the
// whole decision lost with a failed status write), then each action or not.
func (s *sim) apply(d Decision) {
	if s.rng.Float64() < 0.1 {
		return
	}
	s.status = d.Status
	s.status.Upgrade = d.Status.Upgrade.DeepCopy()
	keep := func() bool { return s.rng.Float64() < 0.7 }
	for _, w := range d.StatefulSets {
		if keep() {
			s.sts[w.Color] = StatefulSet{Image: w.Image, Replicas: w.Replicas}
		}
	}
	for _, j := range d.Jobs {
		if _, ok := s.jobs[j.Name]; !ok && keep() {
			s.jobs[j.Name] = &simJob{kind: j.Kind, state: JobRunning}
		}
	}
	for _, l := range d.Labels {
		if p, ok := s.pods[l.Pod]; ok && keep() {
			p.Serving = l.Serving
		}
	}
}

// evolve is Kubernetes between passes: StatefulSets converge, pods get ready, Jobs
// end, traffic flows to the pods that serve.
func (s *sim) evolve() {
	for name, p := range s.pods {
		w, ok := s.sts[p.Color]
		if !ok || p.Ordinal >= int(w.Replicas) || p.Image != w.Image {
			delete(s.pods, name)
		}
	}
	for c, w := range s.sts {
		for i := range int(w.Replicas) {
			if _, ok := s.pods[podName(c, i)]; !ok {
				s.pods[podName(c, i)] = &simPod{Pod: Pod{Name: podName(c, i), Color: c, Ordinal: i, Image: w.Image}}
			}
		}
	}
	for _, p := range s.pods {
		p.age++
		if p.down > 0 {
			p.down--
			continue
		}
		if !p.Ready && p.age > 1 && !s.broken[p.Image] {
			p.Ready = true
		}
	}
	u := s.status.Upgrade
	for name, j := range s.jobs {
		if j.state != JobRunning {
			continue
		}
		j.state = JobSucceeded
		if s.failJob[j.kind] && strings.Contains(name, "-"+u.ID+"-") && u.ToImage == imgB {
			j.state, j.exit = JobFailed, 1
			switch j.kind {
			case JobCutover:
				// Its lease ran out: every attempt (then a rollback) or the first only.
				j.exit = CutoverLeaseExpiredExitCode
				if s.n == 1 && strings.HasSuffix(name, "-1") {
					j.state, j.exit = JobSucceeded, 0
				}
			case JobCutback:
				// A cut back that keeps failing waits for a person: the first only.
				j.exit = CutoverLeaseExpiredExitCode
				if !strings.HasSuffix(name, "-cutback") {
					j.state, j.exit = JobSucceeded, 0
				}
			}
		}
	}
	for _, p := range s.pods {
		if p.Ready && p.Serving {
			s.counters[p.Color].Requests += 10
			s.counters[p.Color].Errors += s.errorsPer10[p.Image]
		}
	}
	s.now = s.now.Add(5 * time.Second)
	s.round++
}

// TestServingNeverDrops runs upgrades with faults across many seeds and checks what
// the machine guarantees about the pods that take traffic (ready and labelled):
//
//   - no decision, however partly applied, and no change Kubernetes makes because of
//     one (a scale-down), lowers their number below the replicas, nor below what it
//     was when it was lower already: the machine never itself takes away serving
//     capacity, so while one ready pod serves, one always does;
//   - without pod faults (only lost actions, failing Jobs, bad metrics, annotations,
//     image changes), at least `replicas` pods serve at every moment;
//   - every upgrade ends settled: Completed, RolledBack, Refused or Failed, the active
//     color's pods all serving and ready, the other color at zero; a Copy upgrade
//     with status.database on the copy exactly when the new version won, no
//     replay left running, and its cleanup done.
//
// It runs once without the guard in labels, so that the phases' own rules are shown
// to keep these promises, and once with it, as the controller runs.
func TestServingNeverDrops(t *testing.T) {
	t.Run("phase rules alone", func(t *testing.T) {
		guardRemovals = false
		defer func() { guardRemovals = true }()
		servingNeverDrops(t)
	})
	t.Run("with the guard", servingNeverDrops)
}

func servingNeverDrops(t *testing.T) {
	for seed := range uint64(400) {
		s := newSim(seed)
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			fail := func(format string, args ...any) {
				t.Helper()
				tail := s.log[max(0, len(s.log)-25):]
				t.Fatalf("round %d, n=%d, flaps=%v: %s\n%s", s.round, s.n, s.flaps, fmt.Sprintf(format, args...), strings.Join(tail, "\n"))
			}
			for s.round < 900 {
				s.faults()
				before := s.readyServing()
				o := s.observe()
				d := Next(o, s.now)
				phase := "-"
				if u := d.Status.Upgrade; u != nil {
					phase = fmt.Sprintf("%s %d/%d", u.Phase, u.Step, u.Steps)
				}
				s.log = append(s.log, fmt.Sprintf("%4d %s serving=%d jobs=%v labels=%v sts=%v", s.round, phase, before, d.Jobs, d.Labels, d.StatefulSets))
				s.apply(d)
				afterApply := s.readyServing()
				s.evolve()
				after := s.readyServing()
				for _, got := range []int32{afterApply, after} {
					if got < min(s.n, before) {
						fail("ready serving pods fell from %d to %d", before, got)
					}
					if !s.flaps && got < s.n {
						fail("without pod faults, %d ready serving pods, want at least %d", got, s.n)
					}
				}
			}
			s.settled(t)
		})
		if t.Failed() {
			return
		}
	}
}

func (s *sim) settled(t *testing.T) {
	t.Helper()
	u := s.status.Upgrade
	// A contract that keeps failing is retried for good, the new version serving.
	retrying := u != nil && u.Phase == v1.UpgradeContracting && u.Reason == v1.ReasonMigrationFailed && s.failJob[JobContract]
	if u == nil || (!terminal(u.Phase) && !retrying) {
		t.Fatalf("after %d rounds the upgrade has not ended: %+v\n%s", s.round, u, strings.Join(s.log[len(s.log)-20:], "\n"))
	}
	d := Next(s.observe(), s.now)
	if !retrying && (d.WriteStatus || len(d.Jobs) > 0 || len(d.Labels) > 0) {
		t.Errorf("not settled: %+v", d)
	}
	active := s.status.ActiveColor
	for _, p := range s.pods {
		if p.Color != active || !p.Ready || !p.Serving {
			t.Errorf("settled in %s with pod %+v (active %s)", u.Phase, p.Pod, active)
		}
	}
	if s.readyServing() != s.n {
		t.Errorf("settled in %s with %d ready serving pods, want %d", u.Phase, s.readyServing(), s.n)
	}
	img := s.sts[active].Image
	if img != s.spec.Image && s.status.FailedImage != s.spec.Image && !retrying {
		t.Errorf("settled in %s serving %s; spec asks %s and it is not a failed image (%q)", u.Phase, img, s.spec.Image, s.status.FailedImage)
	}
	if u.Phase == v1.UpgradeCompleted && !slices.Contains([]string{imgB, imgC, imgA}, img) {
		t.Errorf("completed on %s", img)
	}
	if c := u.Copy; c != nil {
		moved := s.status.Database != nil && *s.status.Database == c.Database
		if moved != (u.Phase == v1.UpgradeCompleted) || (!moved && s.status.Database != nil) {
			t.Errorf("Copy upgrade settled in %s with status.database %+v (copy %+v)", u.Phase, s.status.Database, c.Database)
		}
		if (u.Phase == v1.UpgradeCompleted || u.Phase == v1.UpgradeRolledBack) && c.Cleanup != CleanupDone {
			t.Errorf("Copy upgrade settled in %s with cleanup %q", u.Phase, c.Cleanup)
		}
		if u.Phase == v1.UpgradeRolledBack && c.CutoverAt != nil && !c.CutBack {
			t.Errorf("rolled back after the cutover without a cut back: %+v", c)
		}
	}
	if len(d.Replays) > 0 {
		t.Errorf("settled in %s with replays %v", u.Phase, d.Replays)
	}
}
