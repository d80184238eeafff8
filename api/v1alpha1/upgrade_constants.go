package v1alpha1

// Annotations a user sets on a TokenServer to steer an upgrade with kubectl alone.
// Both must carry the upgrade's id (status.upgrade.id): an annotation left over from
// an earlier upgrade must not promote or roll back a later one.
const (
	// AnnotationPromote promotes a paused upgrade (spec.upgrade.pauseBeforePromotion):
	//
	//	kubectl annotate ts auth oauth.kubeoauth.io/promote=$(kubectl get ts auth -o jsonpath={.status.upgrade.id}) --overwrite
	AnnotationPromote = "oauth.kubeoauth.io/promote"
	// AnnotationRollback rolls an upgrade back, at any phase before its contract
	// migrations start. The image is then recorded in status.failedImage and not
	// tried again until spec.image changes.
	AnnotationRollback = "oauth.kubeoauth.io/rollback"
)

// LabelServing marks the token server pods the public and admin Services send
// traffic to. The operator moves it pod by pod during a promotion and a rollback.
const LabelServing = "oauth.kubeoauth.io/serving"

// Reasons of the Progressing and Degraded conditions that upgrades set. They are API,
// not beside the controller, because users and tools wait on them
// (kubectl wait --for=jsonpath='{.status.conditions[?(@.type=="Progressing")].reason}'=UpgradeCompleted).
const (
	// ReasonUpgradeWaitingForWindow: an image change waits for spec.upgrade.window.
	ReasonUpgradeWaitingForWindow = "UpgradeWaitingForWindow"
	// ReasonUpgradeRolledBack: the upgrade was rolled back; the old image serves.
	ReasonUpgradeRolledBack = "UpgradeRolledBack"
	// ReasonMigrationFailed: a migration Job of the upgrade failed.
	ReasonMigrationFailed = "MigrationFailed"
	// ReasonUpgradeRefused: the upgrade was refused before anything changed, such as
	// a plan that needs a copied database with spec.upgrade.dataMode Shared.
	ReasonUpgradeRefused = "UpgradeRefused"
	// ReasonCutoverFailed: the cutover Job of a Copy upgrade failed (not because its
	// lease ran out) every time it was tried; the upgrade waits for a person.
	ReasonCutoverFailed = "CutoverFailed"
)

// ProgressingReason is the reason of the Progressing condition in phase p:
// "Upgrade" and the phase, such as UpgradePromoting or UpgradeCompleted.
func ProgressingReason(p UpgradePhase) string { return "Upgrade" + string(p) }
