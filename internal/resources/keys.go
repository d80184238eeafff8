package resources

import (
	"time"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// Defaults of spec.tokens when a TokenServer was stored before the CRD defaulted them.
const (
	DefaultSigningAlgorithm   = "ES256"
	DefaultSigningKeyRotation = 90 * 24 * time.Hour
)

// SigningAlgorithm is the algorithm the TokenServer's signing key must have.
func SigningAlgorithm(ts *oauthv1alpha1.TokenServer) string {
	if alg := ts.Spec.Tokens.SigningAlgorithm; alg != "" {
		return alg
	}
	return DefaultSigningAlgorithm
}

// SigningKeyRotation is how often the TokenServer gets a new signing key.
func SigningKeyRotation(ts *oauthv1alpha1.TokenServer) time.Duration {
	period, err := ts.Spec.Tokens.SigningKeyRotation.Parse()
	if err != nil || period <= 0 {
		return DefaultSigningKeyRotation
	}
	return period
}

// SigningKeyState is what the keys Secret says about the current signing key.
type SigningKeyState struct {
	// Algorithm of the stored key; empty when it cannot be parsed.
	Algorithm string
	// RotatedAt is when the key was made (the Secret's annotation, else its
	// creation time).
	RotatedAt time.Time
}

// KeyPlan is what a pass does about the signing key.
type KeyPlan struct {
	// Rotate: make a new key now, keeping the current one as previous.
	Rotate bool
	// Why the key rotates, for the event; empty when it does not.
	Reason string
	// Next is when to look again: when the key falls due.
	Next time.Duration
}

// PlanKeyRotation decides, for the stored key, what to do at now: a new key when
// the rotation period has passed, the algorithm changed or the stored key cannot be
// read. It is pure, for table tests with a fake clock (as clientspec.PlanRotation).
func PlanKeyRotation(ts *oauthv1alpha1.TokenServer, key SigningKeyState, now time.Time) KeyPlan {
	period, alg := SigningKeyRotation(ts), SigningAlgorithm(ts)
	switch due := key.RotatedAt.Add(period); {
	case key.Algorithm == "":
		return KeyPlan{Rotate: true, Reason: "the stored signing key cannot be read", Next: period}
	case key.Algorithm != alg:
		return KeyPlan{Rotate: true, Reason: "spec.tokens.signingAlgorithm changed from " + key.Algorithm + " to " + alg, Next: period}
	case !now.Before(due):
		return KeyPlan{Rotate: true, Reason: "the key is " + now.Sub(key.RotatedAt).Round(time.Second).String() +
			" old (spec.tokens.signingKeyRotation " + period.String() + ")", Next: period}
	default:
		return KeyPlan{Next: due.Sub(now)}
	}
}

// SigningKeyRotatedAt is when the key in a keys Secret with these annotations and
// this creation time was made.
func SigningKeyRotatedAt(annotations map[string]string, created time.Time) time.Time {
	if t, err := time.Parse(time.RFC3339, annotations[AnnotationKeyRotatedAt]); err == nil {
		return t
	}
	return created
}
