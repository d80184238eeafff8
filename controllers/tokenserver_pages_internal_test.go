package controllers

import (
	"context"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

func TestWithPages(t *testing.T) {
	refused := needsHuman(ReasonPageTemplatesInvalid, "ConfigMap t key login.html: ...")
	serving := func(degraded bool, reason string) []metav1.Condition {
		return []metav1.Condition{condition(oauthv1alpha1.ConditionReady, true, ReasonAvailable, "serving"),
			condition(oauthv1alpha1.ConditionDegraded, degraded, reason, "why")}
	}
	tests := map[string]struct {
		conds   []metav1.Condition
		problem *conditionError
		// Degraded's reason after, and Ready still True.
		reason string
	}{
		"no problem":                   {conds: serving(false, ReasonAvailable), reason: ReasonAvailable},
		"templates refused":            {conds: serving(false, ReasonAvailable), problem: refused, reason: ReasonPageTemplatesInvalid},
		"something worse said already": {conds: serving(true, "RolledBack"), problem: refused, reason: "RolledBack"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := withPages(tc.conds, tc.problem)
			if got[0].Status != metav1.ConditionTrue || got[1].Reason != tc.reason ||
				(tc.problem != nil && got[1].Status != metav1.ConditionTrue) {
				t.Errorf("conditions %+v", got)
			}
		})
	}
}

// A ConfigMap the operator (or anything else) controls is no source of templates:
// refused before it is rendered, naming its controller.
func TestCheckTemplatesRefusesAControlledConfigMap(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "auth-pages", OwnerReferences: []metav1.OwnerReference{{
		APIVersion: oauthv1alpha1.GroupVersion.String(), Kind: "TokenServer", Name: "auth", UID: "u", Controller: ptr.To(true)}}},
		Data: map[string]string{"login.html": "hi"}}
	problem, err := checkTemplates(context.Background(), cm)
	if err != nil || problem == nil || problem.reason != ReasonPageTemplatesInvalid ||
		!strings.Contains(problem.message, "ConfigMap auth-pages is controlled by TokenServer auth: name a ConfigMap of your own") {
		t.Fatalf("problem %+v, err %v", problem, err)
	}
	cm.OwnerReferences = nil
	if problem, err := checkTemplates(context.Background(), cm); problem != nil || err != nil {
		t.Fatalf("a ConfigMap of the user's own: problem %+v, err %v", problem, err)
	}
}
