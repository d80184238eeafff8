package resources_test

import (
	"strings"
	"testing"
	"time"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/resources"
)

func TestPlanKeyRotation(t *testing.T) {
	made := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	server := func(alg string, every oauthv1alpha1.Duration) *oauthv1alpha1.TokenServer {
		ts := &oauthv1alpha1.TokenServer{}
		ts.Spec.Tokens.SigningAlgorithm, ts.Spec.Tokens.SigningKeyRotation = alg, every
		return ts
	}
	for _, tc := range []struct {
		name       string
		ts         *oauthv1alpha1.TokenServer
		key        resources.SigningKeyState
		now        time.Time
		wantRotate bool
		wantReason string // a part of the event's reason
		wantNext   time.Duration
	}{
		{name: "fresh key waits for its period", ts: server("ES256", "24h"),
			key: resources.SigningKeyState{Algorithm: "ES256", RotatedAt: made}, now: made.Add(time.Hour), wantNext: 23 * time.Hour},
		{name: "due at the period's end", ts: server("ES256", "24h"),
			key: resources.SigningKeyState{Algorithm: "ES256", RotatedAt: made}, now: made.Add(24 * time.Hour),
			wantRotate: true, wantReason: "24h0m0s old", wantNext: 24 * time.Hour},
		{name: "a second before the end is not due", ts: server("ES256", "24h"),
			key: resources.SigningKeyState{Algorithm: "ES256", RotatedAt: made}, now: made.Add(24*time.Hour - time.Second),
			wantNext: time.Second},
		{name: "long overdue (operator was down)", ts: server("ES256", "24h"),
			key: resources.SigningKeyState{Algorithm: "ES256", RotatedAt: made}, now: made.Add(100 * 24 * time.Hour),
			wantRotate: true, wantReason: "old", wantNext: 24 * time.Hour},
		{name: "algorithm changed", ts: server("RS256", "24h"),
			key: resources.SigningKeyState{Algorithm: "ES256", RotatedAt: made}, now: made.Add(time.Minute),
			wantRotate: true, wantReason: "from ES256 to RS256", wantNext: 24 * time.Hour},
		{name: "unreadable stored key", ts: server("ES256", "24h"),
			key: resources.SigningKeyState{RotatedAt: made}, now: made,
			wantRotate: true, wantReason: "cannot be read", wantNext: 24 * time.Hour},
		{name: "unset spec: ES256 every 90 days", ts: server("", ""),
			key: resources.SigningKeyState{Algorithm: "ES256", RotatedAt: made}, now: made.Add(89 * 24 * time.Hour),
			wantNext: 24 * time.Hour},
		{name: "unset spec: an RS256 key is replaced", ts: server("", ""),
			key: resources.SigningKeyState{Algorithm: "RS256", RotatedAt: made}, now: made,
			wantRotate: true, wantReason: "to ES256", wantNext: 90 * 24 * time.Hour},
		{name: "a rotation time in the future (clock skew) waits", ts: server("ES256", "24h"),
			key: resources.SigningKeyState{Algorithm: "ES256", RotatedAt: made.Add(time.Hour)}, now: made,
			wantNext: 25 * time.Hour},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := resources.PlanKeyRotation(tc.ts, tc.key, tc.now)
			if got.Rotate != tc.wantRotate || got.Next != tc.wantNext || !strings.Contains(got.Reason, tc.wantReason) ||
				(!tc.wantRotate && got.Reason != "") {
				t.Errorf("PlanKeyRotation = %+v, want rotate %v next %v reason containing %q", got, tc.wantRotate, tc.wantNext, tc.wantReason)
			}
		})
	}
}

func TestSigningKeyRotatedAt(t *testing.T) {
	created := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	annotated := map[string]string{resources.AnnotationKeyRotatedAt: "2026-02-01T00:00:00Z"}
	if got := resources.SigningKeyRotatedAt(annotated, created); !got.Equal(created.AddDate(0, 1, 0)) {
		t.Errorf("with the annotation: %v, want 2026-02-01", got)
	}
	for _, ann := range []map[string]string{nil, {resources.AnnotationKeyRotatedAt: "yesterday"}} {
		if got := resources.SigningKeyRotatedAt(ann, created); !got.Equal(created) {
			t.Errorf("annotations %v: %v, want the creation time", ann, got)
		}
	}
}
