package controllers

import (
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/controller/priorityqueue"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// The queue under test is controller-runtime's priority queue, as the controllers
// use it, behind fairQueue.
func newTestFairQueue(t *testing.T) *fairQueue {
	t.Helper()
	q := wrapFair(priorityqueue.New[reconcile.Request](""))
	t.Cleanup(q.ShutDown)
	return q
}

func req(ns, name string) reconcile.Request {
	return reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}}
}

// take hands out the next item as a worker would, and marks it done.
func take(t *testing.T, q *fairQueue) reconcile.Request {
	t.Helper()
	got := make(chan reconcile.Request, 1)
	go func() {
		it, shutdown := q.Get()
		if !shutdown {
			got <- it
		}
	}()
	select {
	case it := <-got:
		q.Done(it)
		return it
	case <-time.After(5 * time.Second):
		t.Fatal("no item handed out within 5s")
		return reconcile.Request{}
	}
}

// A tenant's change waits behind a few of a busy tenant's items, not its whole
// backlog; the busy tenant's items still come, each once and in order.
func TestFairQueueServesAQuietNamespaceFirst(t *testing.T) {
	q := newTestFairQueue(t)
	const n = 1000
	for i := range n {
		q.Add(req("busy", fmt.Sprintf("c%04d", i)))
	}
	q.Add(req("busy", "c0005")) // again, while it waits: still one item
	q.Add(req("quiet", "revoke-me"))
	if l := q.Len(); l != n+1 {
		t.Fatalf("Len() = %d, want %d (the waiting items count)", l, n+1)
	}
	order := make([]reconcile.Request, 0, n+1)
	for range n + 1 {
		order = append(order, take(t, q))
	}
	quietAt := -1
	next := 0
	for i, it := range order {
		if it.Namespace == "quiet" {
			quietAt = i
			continue
		}
		if want := fmt.Sprintf("c%04d", next); it.Name != want {
			t.Fatalf("item %d of the busy namespace is %s, want %s (first in, first out)", next, it.Name, want)
		}
		next++
	}
	if quietAt < 0 || quietAt > 2 {
		t.Fatalf("the quiet namespace's item came %dth, want within the first 3", quietAt+1)
	}
	if next != n {
		t.Fatalf("%d of the busy namespace's %d items came", next, n)
	}
	if l := q.Len(); l != 0 {
		t.Fatalf("Len() = %d after all were handed out", l)
	}
}

// A namespace that keeps adding work does not starve another namespace's backlog:
// both are served in turn.
func TestFairQueueChurnStarvesNoOtherNamespace(t *testing.T) {
	q := newTestFairQueue(t)
	churn := 0
	addChurn := func() {
		q.Add(req("a", fmt.Sprintf("x%d", churn)))
		churn++
	}
	for range 500 {
		addChurn()
	}
	const backlog = 50
	for i := range backlog {
		q.Add(req("b", fmt.Sprintf("g%02d", i)))
	}
	served := 0
	for i := 0; served < backlog; i++ {
		if i > 3*backlog {
			t.Fatalf("after %d hand-outs only %d of the other namespace's %d items were served", i, served, backlog)
		}
		if take(t, q).Namespace == "b" {
			served++
		}
		addChurn() // a new item of namespace a for every one handed out
	}
}

// An object of a cache's first list (low priority) waits behind changes, as in
// controller-runtime's queue, also among one namespace's waiting items; an item
// added while a worker has it comes again after Done; a delayed item is not held.
func TestFairQueueKeepsPrioritiesDelaysAndRepeats(t *testing.T) {
	q := newTestFairQueue(t)
	low := handler.LowPriority
	for i := range 5 {
		q.AddWithOpts(priorityqueue.AddOpts{Priority: &low}, req("a", fmt.Sprintf("listed%d", i)))
	}
	q.Add(req("a", "changed"))
	// listed0 and listed1 went in at once; the change waited, and went in ahead of
	// the namespace's other listed objects once listed0 was taken.
	first, second, third := take(t, q), take(t, q), take(t, q)
	if first.Name != "listed0" || second.Name != "changed" || third.Name != "listed1" {
		t.Fatalf("handed out %s, %s, %s; want listed0, changed, listed1", first.Name, second.Name, third.Name)
	}
	// Raised from low to normal priority while it waits, listed4 goes in next and
	// ahead of listed3, which went in before it at low priority.
	q.Add(req("a", "listed4"))
	if a, b := take(t, q), take(t, q); a.Name != "listed2" || b.Name != "listed4" {
		t.Fatalf("handed out %s, %s; want listed2, then listed4, raised to a change's priority", a.Name, b.Name)
	}

	// Added again while a worker holds it: handed out again once it is done.
	q.Add(req("c", "busy"))
	it, _ := q.Get()
	q.Add(req("c", "busy"))
	q.Done(it)
	seen := map[string]int{}
	for q.Len() > 0 {
		seen[take(t, q).Name]++
	}
	if seen["busy"] != 1 || seen["listed3"] != 1 || len(seen) != 2 {
		t.Fatalf("the rest came as %v, want busy and listed3 once each", seen)
	}

	// Delayed items go to the queue with their delay, whatever the namespace holds.
	for i := range 3 {
		q.Add(req("d", fmt.Sprintf("now%d", i)))
	}
	q.AddAfter(req("d", "later"), 50*time.Millisecond)
	names := map[string]bool{}
	for range 4 {
		names[take(t, q).Name] = true
	}
	if !names["later"] || len(names) != 4 {
		t.Fatalf("handed out %v, want now0–now2 and later", names)
	}
}
