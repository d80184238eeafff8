package controllers_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/controllers"
)

// stalledByRefusal: a bundled server whose pods a quota refuses, past its
// progress deadline, after the StatefulSet's latest FailedCreate event says
// refusal. It returns the Stalled condition, failing the test if none comes.
func stalledByRefusal(t *testing.T, ns string, refusal string) *metav1.Condition {
	t.Helper()
	ctx := context.Background()
	step := advanceOperatorClock(t)
	ts, _, _ := refusedServer(t, ns)
	var sts appsv1.StatefulSet
	get(t, ns, "auth-blue", &sts)
	// What the StatefulSet controller records when an admission webhook refuses the
	// pod: its message, unabridged (client-go's recorder shortens nothing).
	// Later than the fake kubelet's own event for auth-blue-0, so that it is the latest.
	later := metav1.NewTime(time.Now().Add(time.Minute))
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "auth-blue.webhook-failedcreate"},
		InvolvedObject: corev1.ObjectReference{APIVersion: "apps/v1", Kind: "StatefulSet", Namespace: ns, Name: sts.Name, UID: sts.UID},
		Reason:         "FailedCreate", Type: corev1.EventTypeWarning, Count: 1, FirstTimestamp: later, LastTimestamp: later,
		Source:  corev1.EventSource{Component: "statefulset-controller"},
		Message: fmt.Sprintf("Create Pod auth-blue-0 in StatefulSet %s failed error: %s", sts.Name, refusal)}
	if err := k8s.Create(ctx, ev); err != nil {
		t.Fatal(err)
	}
	step(10*time.Minute + time.Second)
	poke(t, ts)
	var stalled *metav1.Condition
	eventually(t, 20*time.Second, "Stalled quoting the webhook's refusal", func() bool {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(ts), ts); err != nil {
			return false
		}
		stalled = meta.FindStatusCondition(ts.Status.Conditions, oauthv1alpha1.ConditionStalled)
		return stalled != nil && stalled.Reason == controllers.ReasonProgressDeadlineExceeded && strings.Contains(stalled.Message, "denied")
	}, func() string {
		out := make([]string, 0, len(ts.Status.Conditions))
		for _, c := range ts.Status.Conditions {
			out = append(out, fmt.Sprintf("%s=%s %s %.300q", c.Type, c.Status, c.Reason, c.Message))
		}
		return strings.Join(out, "; ") + fmt.Sprintf("; waiting %+v", ts.Status.Waiting)
	})
	return stalled
}

// TestLongRefusalStillStalls: a policy engine's webhook that lists every
// violated rule refuses the pods with a message longer than a condition's message
// may be (32768 characters, metav1.Condition's schema). The server must still go
// Stalled, quoting as much of the refusal as fits; otherwise the status write is
// refused by the CRD on every pass and the TokenServer reads Reconciling forever,
// which is what spec.progressDeadline is there to end.
func TestLongRefusalStillStalls(t *testing.T) {
	ns := namespace(t, "longrefusal", nil)
	var b strings.Builder
	b.WriteString(`admission webhook "validation.gatekeeper.sh" denied the request:`)
	for i := 0; b.Len() < 40000; i++ {
		b.WriteString(" [require-labels] you must provide labels: {\"cost-center\", \"owner\", \"data-classification\"};")
	}
	stalled := stalledByRefusal(t, ns, b.String())
	if !strings.Contains(stalled.Message, `denied the request: [require-labels]`) {
		t.Errorf("Stalled says %.200q..., want the webhook's refusal", stalled.Message)
	}
}

// TestRefusalControlCharacters: a FailedCreate event's message is text a
// tenant can write (any ServiceAccount allowed to create events in its namespace,
// or a webhook quoting the pod's fields). Quoted into the TokenServer's conditions
// it must stay one line of printable text: an escape sequence in `kubectl describe`
// or in Argo CD's UI is a terminal/log injection into the platform team's view.
func TestRefusalControlCharacters(t *testing.T) {
	ns := namespace(t, "ctlrefusal", nil)
	stalled := stalledByRefusal(t, ns, "denied\x1b[2J\x1b[1;1H\nStalled: False\r\tforged")
	if strings.ContainsFunc(stalled.Message, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		t.Errorf("Stalled's message carries control characters: %q", stalled.Message)
	}
}

// TestRefusalWarningEvent: a refusal of about a kilobyte, as Kyverno or
// Gatekeeper word one that lists a few rules, is quoted into Stalled. The Warning
// event that says the server stalled (docs/troubleshooting.md sends the reader to
// `kubectl get events`) must still be recorded: events.k8s.io/v1 refuses a note over
// 1024 bytes, and the recorder drops the event.
func TestRefusalWarningEvent(t *testing.T) {
	ns := namespace(t, "kyverno", nil)
	var b strings.Builder
	b.WriteString(`admission webhook "validate.kyverno.svc-fail" denied the request: resource Pod/` + ns + `/auth-blue-0 was blocked due to the following policies`)
	for _, rule := range []string{"require-requests-limits", "require-pod-probes", "disallow-latest-tag", "require-run-as-nonroot", "restrict-image-registries"} {
		b.WriteString(" " + rule + ": autogen-" + rule + ": 'validation error: the pod must satisfy the " + rule +
			" policy of the platform team; see https://policies.example.com/" + rule + "'")
	}
	refusal := b.String()
	if len(refusal) > 1200 {
		t.Fatalf("the refusal is %d bytes; this test wants one under 1200", len(refusal))
	}
	stalledByRefusal(t, ns, refusal)
	if note := waitWarning(t, ns, "auth", controllers.ReasonProgressDeadlineExceeded); !strings.Contains(note, "kyverno") {
		t.Errorf("the Warning event says %q, want the webhook's refusal", note)
	}
}
