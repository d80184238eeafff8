package controllers

import (
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// heldItems counts, by queue, the items fairQueue holds back: workqueue_depth,
// the queue's own, counts only those it let in.
var heldItems = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "kubeoauth_workqueue_held",
	Help: "Items of busy namespaces waiting to enter the controller's work queue (fair between namespaces)"}, []string{"name"})

func init() { metrics.Registry.MustRegister(heldItems) }

// perNamespaceQueued is how many of one namespace's items the shared queue holds,
// ready, at a time (fairQueue).
const perNamespaceQueued = 2

// newFairQueue is a controller's work queue in which one namespace's backlog does
// not delay the others': every tenant creates and edits its own OAuthClients and
// ConsentGrants, and a tenant that changes thousands of them at once (or keeps
// changing them) would otherwise put each other tenant's next change, a revocation
// by kubectl delete included, behind all of its own, first in, first out.
//
// The queue is controller-runtime's priority queue (which the controllers used
// before, and which keeps its order, de-duplication, delays, rate limits and
// metrics), fed by fairQueue: of the items added to be handled now, it holds at
// most perNamespaceQueued of one namespace at a time; the namespace's others wait
// in fairQueue, in order, and the next goes in when one of the namespace's items is
// handed to a worker. So a namespace's new item waits behind at most
// perNamespaceQueued items of each other namespace with work, not behind their
// whole backlogs. Nothing is refused or dropped, and a single busy namespace keeps
// every worker busy, since each hand-out lets its next item in. Items added with a
// delay (a requeue after a period, a retry after a failure) go to the queue at
// once, with their delay, as before: a client's scheduled look is not work it
// competes with. controller-runtime has no such queue (its priority queue orders by
// priority and age only), hence this one.
func newFairQueue(log logr.Logger) func(string, workqueue.TypedRateLimiter[reconcile.Request]) requestQueue {
	return func(name string, rl workqueue.TypedRateLimiter[reconcile.Request]) requestQueue {
		f := wrapFair(priorityqueue.New(name, func(o *priorityqueue.Opts[reconcile.Request]) {
			o.Log = log.WithValues("controller", name)
			o.RateLimiter = rl
		}))
		f.gauge = heldItems.WithLabelValues(name)
		return f
	}
}

// requestQueue is a controller's work queue.
type requestQueue = workqueue.TypedRateLimitingInterface[reconcile.Request]

// wrapFair makes q fair between namespaces (see newFairQueue).
func wrapFair(q priorityqueue.PriorityQueue[reconcile.Request]) *fairQueue {
	return &fairQueue{PriorityQueue: q, queued: map[reconcile.Request]struct{}{}, inQueue: map[string]int{},
		waiting: map[string]*nsBacklog{}, backlogged: map[reconcile.Request]int{}}
}

type fairQueue struct {
	priorityqueue.PriorityQueue[reconcile.Request]

	mu sync.Mutex
	// queued are the items fairQueue put in the queue to be handled now and that
	// no worker has taken yet; inQueue counts them by namespace.
	queued  map[reconcile.Request]struct{}
	inQueue map[string]int
	// waiting holds, by namespace, the items not yet let in; backlogged maps each
	// to its priority there.
	waiting    map[string]*nsBacklog
	backlogged map[reconcile.Request]int
	held       int
	gauge      prometheus.Gauge // of held; nil: none
}

// setHeld changes held by d; f.mu is held.
func (f *fairQueue) setHeld(d int) {
	f.held += d
	if f.gauge != nil {
		f.gauge.Set(float64(f.held))
	}
}

// nsBacklog is one namespace's waiting items, the higher priorities (controller-
// runtime's: 0 for a change, below 0 for an object of a cache's first list) first,
// each in the order they came.
type nsBacklog struct{ high, low []waitingItem }

type waitingItem struct {
	req  reconcile.Request
	prio int
}

func (f *fairQueue) Add(item reconcile.Request) { f.AddWithOpts(priorityqueue.AddOpts{}, item) }

func (f *fairQueue) AddAfter(item reconcile.Request, after time.Duration) {
	f.AddWithOpts(priorityqueue.AddOpts{After: after}, item)
}

func (f *fairQueue) AddRateLimited(item reconcile.Request) {
	f.AddWithOpts(priorityqueue.AddOpts{RateLimited: true}, item)
}

// AddWithOpts implements priorityqueue.PriorityQueue.
func (f *fairQueue) AddWithOpts(o priorityqueue.AddOpts, items ...reconcile.Request) {
	if o.After > 0 || o.RateLimited {
		f.PriorityQueue.AddWithOpts(o, items...)
		return
	}
	prio := 0
	if o.Priority != nil {
		prio = *o.Priority
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, it := range items {
		if p, ok := f.backlogged[it]; ok {
			if prio > p {
				// As the queue does, the higher priority counts: it moves up.
				f.waiting[it.Namespace].remove(it, p)
				f.backlogged[it] = prio
				f.waiting[it.Namespace].push(it, prio)
			}
			continue
		}
		if _, ok := f.queued[it]; ok || f.inQueue[it.Namespace] < perNamespaceQueued {
			f.letIn(it, prio)
			continue
		}
		b := f.waiting[it.Namespace]
		if b == nil {
			b = &nsBacklog{}
			f.waiting[it.Namespace] = b
		}
		f.backlogged[it] = prio
		b.push(it, prio)
		f.setHeld(1)
	}
}

// letIn puts it in the queue, to be handled now; f.mu is held.
func (f *fairQueue) letIn(it reconcile.Request, prio int) {
	if _, ok := f.queued[it]; !ok {
		f.queued[it] = struct{}{}
		f.inQueue[it.Namespace]++
	}
	f.PriorityQueue.AddWithOpts(priorityqueue.AddOpts{Priority: &prio}, it)
}

func (f *fairQueue) Get() (reconcile.Request, bool) {
	it, _, shutdown := f.GetWithPriority()
	return it, shutdown
}

// GetWithPriority implements priorityqueue.PriorityQueue: a worker takes an item,
// which lets its namespace's next waiting item in.
func (f *fairQueue) GetWithPriority() (reconcile.Request, int, bool) {
	it, prio, shutdown := f.PriorityQueue.GetWithPriority()
	if shutdown {
		return it, prio, shutdown
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.queued[it]; !ok {
		return it, prio, shutdown // added with a delay
	}
	delete(f.queued, it)
	ns := it.Namespace
	if f.inQueue[ns]--; f.inQueue[ns] == 0 {
		delete(f.inQueue, ns)
	}
	if b := f.waiting[ns]; b != nil {
		next, p := b.pop()
		delete(f.backlogged, next)
		f.setHeld(-1)
		if len(b.high)+len(b.low) == 0 {
			delete(f.waiting, ns)
		}
		f.letIn(next, p)
	}
	return it, prio, shutdown
}

// Len counts the waiting items too.
func (f *fairQueue) Len() int {
	f.mu.Lock()
	held := f.held
	f.mu.Unlock()
	return f.PriorityQueue.Len() + held
}

func (b *nsBacklog) list(prio int) *[]waitingItem {
	if prio >= 0 {
		return &b.high
	}
	return &b.low
}

func (b *nsBacklog) push(it reconcile.Request, prio int) {
	l := b.list(prio)
	*l = append(*l, waitingItem{it, prio})
}

func (b *nsBacklog) pop() (reconcile.Request, int) {
	l := &b.high
	if len(*l) == 0 {
		l = &b.low
	}
	w := (*l)[0]
	*l = (*l)[1:]
	return w.req, w.prio
}

func (b *nsBacklog) remove(it reconcile.Request, prio int) {
	l := b.list(prio)
	for i, w := range *l {
		if w.req == it {
			*l = append((*l)[:i], (*l)[i+1:]...)
			return
		}
	}
}
