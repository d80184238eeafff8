package upgrade

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"k8s.io/utils/ptr"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
)

// settings are spec.upgrade parsed. Admission checked the formats; an unparsable
// value (an object that bypassed validation) falls back to the CRD's default.
type settings struct {
	verify, pause            bool
	dataMode                 string
	maxErrorRate             float64 // a fraction, 0.01 for "1%"
	interval                 time.Duration
	minRequests              int64
	failureThreshold         int32
	deadline, scaleDownDelay time.Duration
	rollbackWindow           time.Duration
	window                   *oauthv1alpha1.UpgradeWindow
}

func settingsOf(u oauthv1alpha1.UpgradeSettings) settings {
	s := settings{
		verify:           ptr.Deref(u.Verify, true),
		pause:            u.PauseBeforePromotion,
		dataMode:         u.DataMode,
		maxErrorRate:     0.01,
		interval:         duration(u.Analysis.Interval, 30*time.Second),
		minRequests:      int64(ptr.Deref(u.Analysis.MinRequestsPerStep, 20)),
		failureThreshold: u.Analysis.FailureThreshold,
		deadline:         duration(u.ProgressDeadline, 10*time.Minute),
		scaleDownDelay:   duration(u.ScaleDownDelay, 30*time.Second),
		rollbackWindow:   duration(u.RollbackWindow, time.Hour),
		window:           u.Window,
	}
	if r, err := strconv.ParseFloat(strings.TrimSuffix(u.MaxErrorRate, "%"), 64); err == nil && strings.HasSuffix(u.MaxErrorRate, "%") {
		s.maxErrorRate = r / 100
	}
	if s.failureThreshold < 1 {
		s.failureThreshold = 3
	}
	if s.dataMode == "" {
		s.dataMode = "Auto"
	}
	return s
}

func duration(d oauthv1alpha1.Duration, def time.Duration) time.Duration {
	if v, err := d.Parse(); err == nil && v > 0 {
		return v
	}
	return def
}

// newID names an upgrade: short, so that Job names stay within 63 characters, and
// different for two upgrades between the same images, even two started at the
// same instant (a retry of a failed image, on a coarse clock): the previous id is
// part of it, or the new upgrade would find the old one's Jobs by their names.
func newID(from, to string, now time.Time, previous string) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d\x00%s", from, to, now.UnixNano(), previous))
	return hex.EncodeToString(sum[:4])
}

// JobName is the deterministic name of an upgrade's Job of kind: the controller
// finds the Job by it, so a restarted operator never runs one twice. Long server
// names are cut so that the name fits a label value (63 characters).
func JobName(server, id string, kind JobKind) string {
	suffix := "-" + id + "-" + string(kind)
	if len(server)+len(suffix) > 63 {
		server = strings.TrimRight(server[:63-len(suffix)], "-.")
	}
	return server + suffix
}

// UpgradeJobName is the name of the current attempt of the upgrade's Job of kind: a
// failed contract, cutover or cut back Job is retried under a new name
// (<server>-<id>-contract-<n>, -cutover-<n>, -cutback-<n>).
func UpgradeJobName(server string, u *oauthv1alpha1.UpgradeStatus, kind JobKind) string {
	if kind == JobContract && u.ContractRetries > 0 {
		kind = JobKind(fmt.Sprintf("%s-%d", kind, u.ContractRetries))
	}
	if (kind == JobCutover || kind == JobCutback) && u.Copy != nil && u.Copy.CutoverRetries > 0 {
		kind = JobKind(fmt.Sprintf("%s-%d", kind, u.Copy.CutoverRetries))
	}
	return JobName(server, u.ID, kind)
}

// CopySecretName names the Secret of a bundled copy's DSN: <server>-<id>-db.
func CopySecretName(server, id string) string { return JobName(server, id, "db") }

// ReplayName names the replay Deployment of an upgrade in a direction:
// <server>-<id>-replay, and -replay-back for the backward one.
func ReplayName(server, id, direction string) string {
	if direction == Backward {
		return JobName(server, id, "replay-back")
	}
	return JobName(server, id, "replay")
}

// settingsDigest identifies spec.upgrade, recorded with a failed image: other
// settings may make it pass.
func settingsDigest(u oauthv1alpha1.UpgradeSettings) string {
	b, _ := json.Marshal(u)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// windowState says whether an upgrade may start at now, and if not, when it may.
func windowState(w *oauthv1alpha1.UpgradeWindow, loc *time.Location, now time.Time) (open bool, opens time.Time, why string) {
	if w == nil {
		return true, time.Time{}, ""
	}
	if loc == nil {
		if w.TimeZone != "" && w.TimeZone != "UTC" {
			return false, time.Time{}, fmt.Sprintf(
				"spec.upgrade.window.timeZone %q is not a time zone the operator knows; the upgrade waits", w.TimeZone)
		}
		loc = time.UTC
	}
	start, err := time.Parse("15:04", w.Start)
	if err != nil {
		return true, time.Time{}, ""
	}
	length := duration(w.Duration, time.Hour)
	local := now.In(loc)
	// Today's opening and yesterday's: a window may run past midnight.
	for _, day := range []int{-1, 0, 1} {
		o := time.Date(local.Year(), local.Month(), local.Day()+day, start.Hour(), start.Minute(), 0, 0, loc)
		if !now.Before(o) && now.Before(o.Add(length)) {
			return true, time.Time{}, ""
		}
		if now.Before(o) {
			return false, o, fmt.Sprintf("waiting for the upgrade window: it opens at %s (%s for %s)",
				o.UTC().Format(time.RFC3339), w.Start, w.Duration)
		}
	}
	return false, time.Time{}, "waiting for the upgrade window"
}
