package controllers

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// A TokenServer's status changes with every step of an upgrade; each change brought
// a pass of every one of its clients. Only what a client's pass reads of it does now.
func TestClientsFollowWhatTheirPassReadsOfTheServer(t *testing.T) {
	server := func(gen int64, ready metav1.ConditionStatus, phase string, deleting bool) *oauthv1alpha1.TokenServer {
		ts := &oauthv1alpha1.TokenServer{ObjectMeta: metav1.ObjectMeta{Namespace: "platform", Name: "auth", Generation: gen}}
		meta.SetStatusCondition(&ts.Status.Conditions, metav1.Condition{Type: oauthv1alpha1.ConditionReady, Status: ready, Reason: "R"})
		meta.SetStatusCondition(&ts.Status.Conditions, metav1.Condition{Type: oauthv1alpha1.ConditionProgressing,
			Status: metav1.ConditionTrue, Reason: phase})
		if deleting {
			now := metav1.Now()
			ts.DeletionTimestamp = &now
		}
		return ts
	}
	base := server(3, metav1.ConditionTrue, "UpgradeDeploying", false)
	for name, tc := range map[string]struct {
		next *oauthv1alpha1.TokenServer
		want bool
	}{
		"an upgrade's next step":  {server(3, metav1.ConditionTrue, "UpgradePromoting", false), false},
		"a spec change":           {server(4, metav1.ConditionTrue, "UpgradeDeploying", false), true},
		"no longer Ready":         {server(3, metav1.ConditionFalse, "UpgradeDeploying", false), true},
		"its deletion under way":  {server(3, metav1.ConditionTrue, "UpgradeDeploying", true), true},
		"the same object, resent": {server(3, metav1.ConditionTrue, "UpgradeDeploying", false), false},
	} {
		if got := serverChangedForClients.Update(event.UpdateEvent{ObjectOld: base, ObjectNew: tc.next}); got != tc.want {
			t.Errorf("%s: a pass of every client %v, want %v", name, got, tc.want)
		}
	}
}
