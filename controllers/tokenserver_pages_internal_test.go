package controllers

import (
	"testing"

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
