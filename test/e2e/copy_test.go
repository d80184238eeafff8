//go:build e2e

package e2e

import (
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	oauthv1alpha1 "github.com/kubeoauth/kubeoauth/api/v1alpha1"
	"github.com/kubeoauth/kubeoauth/internal/testing/loadgen"
)

// The Copy scenarios upgrade to v4-test, whose breaking migration renames
// tokens.requested_at to issued_at (docs/upgrades.md, "Test builds").
const (
	imageV4   = "ghcr.io/kubeoauth/tokenserver:v4-test"
	versionV4 = "dev-v4test"
)

// copyFigures gathers, from the TokenServer's status as the test watched it, the
// figures docs/upgrades.md reports for a Copy upgrade.
type copyFigures struct {
	mu                     sync.Mutex
	rows                   int64
	maxPending             int64
	maxLag, hold           float64
	copyingAt, cutoverDone time.Time
}

func (f *copyFigures) see(ts *oauthv1alpha1.TokenServer) {
	u := ts.Status.Upgrade
	if u == nil || u.Copy == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	c := u.Copy
	f.rows = max(f.rows, c.RowsCopied)
	f.maxPending = max(f.maxPending, c.ReplayPending)
	if l, err := strconv.ParseFloat(c.ReplayLagSeconds, 64); err == nil {
		f.maxLag = max(f.maxLag, l)
	}
	if h, err := strconv.ParseFloat(c.FenceHoldSeconds, 64); err == nil {
		f.hold = max(f.hold, h)
	}
}

func (f *copyFigures) String() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return fmt.Sprintf("rows copied %d, replay pending at most %d, replay lag at most %.2fs, fence hold %.2fs, window %.1fs",
		f.rows, f.maxPending, f.maxLag, f.hold, f.cutoverDone.Sub(f.copyingAt).Seconds())
}

// openDatabase opens the bundled PostgreSQL of the scenario with the DSN in the
// given Secret key, through the database pod's address (the test runs outside the
// cluster's DNS).
func openDatabase(t *testing.T, e *upgradeEnv, secret, key string) *sql.DB {
	t.Helper()
	var sec corev1.Secret
	if err := suite.c.Get(t.Context(), client.ObjectKey{Namespace: e.ns, Name: secret}, &sec); err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := suite.c.Get(t.Context(), client.ObjectKey{Namespace: e.ns, Name: "auth-db-0"}, &pod); err != nil {
		t.Fatal(err)
	}
	dsn := strings.Replace(string(sec.Data[key]), "auth-db."+e.ns+".svc", pod.Status.PodIP, 1)
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// copyUpgrade is fastUpgrade for Copy: the plan decides (Auto), a short fence lease.
func copyUpgrade(rollbackWindow string) oauthv1alpha1.UpgradeSettings {
	up := fastUpgrade()
	up.RollbackWindow = oauthv1alpha1.Duration(rollbackWindow)
	return up
}

var copyPhases = []oauthv1alpha1.UpgradePhase{"Planning", "Copying", "Deploying", "Replaying", "CuttingOver", "ScalingDown",
	"RollbackWindow", "Completed"}

// watchCopy returns a phaseWatch that records the figures and calls at.
func watchCopy(f *copyFigures, g *loadgen.Generator, at func(p oauthv1alpha1.UpgradePhase, ts *oauthv1alpha1.TokenServer)) *phaseWatch {
	return &phaseWatch{at: func(p oauthv1alpha1.UpgradePhase, ts *oauthv1alpha1.TokenServer) {
		switch p {
		case oauthv1alpha1.UpgradeCopying:
			f.copyingAt = time.Now()
		case oauthv1alpha1.UpgradeCuttingOver:
			g.Mark("cutover started")
		case oauthv1alpha1.UpgradeScalingDown:
			f.cutoverDone = time.Now()
		}
		if at != nil {
			at(p, ts)
		}
	}, each: f.see}
}

// copied checks what a completed Copy upgrade leaves: v4 serving on green, on the
// copy (status.database), whose tokens table has v4's shape and holds the tokens
// blue issued before and during the upgrade.
func copied(t *testing.T, e *upgradeEnv, w *phaseWatch, f *copyFigures, rep *loadgen.Report) {
	t.Helper()
	if !slices.Equal(w.seen, copyPhases) {
		t.Errorf("phases %v; want %v", w.seen, copyPhases)
	}
	ts := e.ts
	if ts.Status.CurrentImage != imageV4 || ts.Status.ActiveColor != "green" {
		t.Errorf("after the upgrade: currentImage %q, activeColor %q; want %s on green", ts.Status.CurrentImage,
			ts.Status.ActiveColor, imageV4)
	}
	want := "auth-" + ts.Status.Upgrade.ID + "-db"
	if ts.Status.Database == nil || ts.Status.Database.SecretName != want {
		t.Fatalf("status.database %+v; want the copy's Secret %s", ts.Status.Database, want)
	}
	for _, c := range rep.Cutovers {
		if !c.Reached || c.Err != "" {
			t.Errorf("cutover %+v: v4 never served alone", c)
		}
	}
	if rep.Versions[versionV4] == 0 {
		t.Errorf("no answer from %s: %v", versionV4, rep.Versions)
	}
	db := openDatabase(t, e, ts.Status.Database.SecretName, ts.Status.Database.Key)
	var seeded, during, all int
	if err := db.QueryRowContext(t.Context(), `SELECT count(*) FILTER (WHERE signature LIKE 'seed-%'),
    count(*) FILTER (WHERE issued_at >= $1 AND issued_at < $2), count(*) FROM tokens`,
		f.copyingAt, f.cutoverDone).Scan(&seeded, &during, &all); err != nil {
		t.Fatalf("the copy's tokens table (v4's shape, issued_at): %v", err)
	}
	if seeded != seedRows || during == 0 {
		t.Errorf("the copy holds %d of the %d seeded tokens and %d issued between the copy's start and the cutover; "+
			"want all, and some", seeded, seedRows, during)
	}
	t.Logf("the copy holds %d tokens: %d seeded before the upgrade, %d issued on blue between the copy's start and the cutover",
		all, seeded, during)
	cleanedUp(t, e, db)
}

// cleanedUp waits for the upgrade's cleanup Job and checks that the database that
// serves carries nothing of the upgrade any more: no capture (a row per write),
// no fence, no upgrade schema.
func cleanedUp(t *testing.T, e *upgradeEnv, db *sql.DB) {
	t.Helper()
	e.waitTS(t, 2*time.Minute, "the cleanup done", func(ts *oauthv1alpha1.TokenServer) error {
		if c := ts.Status.Upgrade.Copy; c == nil || c.Cleanup != "Done" {
			return fmt.Errorf("status.upgrade.copy %+v", c)
		}
		return nil
	})
	var left string
	if err := db.QueryRowContext(t.Context(), `SELECT concat_ws(',', to_regnamespace('kubeoauth_capture')::text,
    to_regnamespace('kubeoauth_upgrade')::text, (SELECT string_agg(DISTINCT tgname, ',') FROM pg_trigger WHERE tgname LIKE 'kubeoauth%'))`).
		Scan(&left); err != nil || left != "" {
		t.Errorf("the serving database after the cleanup still has %q (%v)", left, err)
	}
}

// seedRows tokens are written into blue's database before a Copy upgrade, so that
// the copy takes a while and the load's writes meanwhile must be replayed.
const seedRows = 100000

// seedTokens writes seedRows access tokens of clientID into blue's database, as
// blue's own would be (the old shape: requested_at), valid for a day.
func seedTokens(t *testing.T, e *upgradeEnv, clientID string) {
	t.Helper()
	db := openDatabase(t, e, "auth-db", "dsn")
	start := time.Now()
	if _, err := db.ExecContext(t.Context(), `INSERT INTO tokens (kind, signature, request_id, client_id, requested_at, expires_at, session)
SELECT 'access_token', 'seed-' || i, 'seed-req-' || i, $1, now(), now() + interval '1 day', '{}'::jsonb
FROM generate_series(1, $2) AS i`, clientID, seedRows); err != nil {
		t.Fatal(err)
	}
	t.Logf("seeded %d tokens into blue's database in %s", seedRows, time.Since(start).Round(time.Millisecond))
}

// A Copy upgrade under load: the breaking migration runs on a copy, blue's writes
// are replayed onto it, one fenced cutover, and the ledger all zeros.
func testCopyUpgrade(t *testing.T) {
	e := newUpgradeEnv(t, "up-copy", copyUpgrade("5s"))
	seedTokens(t, e, e.cfg.Machine.ID)
	g := e.startLoad(t)
	e.setImage(t, imageV4)
	f := &copyFigures{}
	w := watchCopy(f, g, nil)
	e.follow(t, 5*time.Minute, imageV4, w, ended...)
	rep := checkLoad(t, g, loadgen.Cutover{Mark: "cutover started", Version: versionV4})
	mustBeZero(t, rep)
	copied(t, e, w, f, rep)
	t.Logf("Copy upgrade figures: %s", f)
}

// holdTokensLock opens a transaction on blue's database that writes the tokens
// table (so holds the lock every token write takes, which the capture trigger's
// CREATE TRIGGER waits for) and ends it after d.
func holdTokensLock(t *testing.T, e *upgradeEnv, d time.Duration) <-chan struct{} {
	t.Helper()
	db := openDatabase(t, e, "auth-db", "dsn")
	tx, err := db.BeginTx(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(t.Context(), `UPDATE tokens SET active = active WHERE false`); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(d)
		if err := tx.Commit(); err != nil {
			t.Errorf("the long transaction: %v", err)
		}
	}()
	return done
}

// deletePods deletes the pods matching labels, as a node failure would.
func deletePods(t *testing.T, ns string, labels map[string]string, what string) int {
	t.Helper()
	var pods corev1.PodList
	if err := suite.c.List(t.Context(), &pods, client.InNamespace(ns), client.MatchingLabels(labels)); err != nil {
		t.Fatal(err)
	}
	for i := range pods.Items {
		if err := suite.c.Delete(t.Context(), &pods.Items[i]); client.IgnoreNotFound(err) != nil {
			t.Errorf("deleting %s pod %s: %v", what, pods.Items[i].Name, err)
		}
	}
	t.Logf("%s: deleted %d %s pods", time.Now().Format("15:04:05.0"), len(pods.Items), what)
	return len(pods.Items)
}

// A Copy upgrade through everything that can go wrong on the way, under load: a
// long transaction on blue's tokens table while the capture triggers go in, the
// copy Job's pod killed, the operator deleted in Copying, Replaying and
// CuttingOver, the replayer's pod killed. It completes, all zeros.
func testCopyUpgradeInterrupted(t *testing.T) {
	e := newUpgradeEnv(t, "up-copy-kill", copyUpgrade("5s"))
	seedTokens(t, e, e.cfg.Machine.ID)
	g := e.startLoad(t)
	long := holdTokensLock(t, e, 8*time.Second)
	e.setImage(t, imageV4)
	f := &copyFigures{}
	var interrupted []string
	w := watchCopy(f, g, func(p oauthv1alpha1.UpgradePhase, ts *oauthv1alpha1.TokenServer) {
		switch p {
		case oauthv1alpha1.UpgradeCopying:
			// The copy waits for the capture triggers behind the long transaction:
			// its pod is killed mid-way.
			job := map[string]string{"job-name": "auth-" + ts.Status.Upgrade.ID + "-copy"}
			eventually(t, 30*time.Second, "the copy Job's pod running", func() error {
				var pods corev1.PodList
				if err := suite.c.List(t.Context(), &pods, client.InNamespace(e.ns), client.MatchingLabels(job)); err != nil {
					return err
				}
				for _, p := range pods.Items {
					if p.Status.Phase == corev1.PodRunning {
						return nil
					}
				}
				return fmt.Errorf("%d pods, none running", len(pods.Items))
			})
			if deletePods(t, e.ns, job, "copy Job") == 0 {
				t.Error("no copy Job pod to kill")
			}
			deleteOperator(t)
			interrupted = append(interrupted, "copy Job and operator in Copying")
		case oauthv1alpha1.UpgradeReplaying:
			if deletePods(t, e.ns, map[string]string{"app.kubernetes.io/component": "upgrade-replay"}, "replayer") == 0 {
				t.Error("no replayer pod to kill")
			}
			deleteOperator(t)
			interrupted = append(interrupted, "replayer and operator in Replaying")
		case oauthv1alpha1.UpgradeCuttingOver:
			deleteOperator(t)
			interrupted = append(interrupted, "operator in CuttingOver")
		}
	})
	e.follow(t, 6*time.Minute, imageV4, w, ended...)
	<-long
	waitOperator(t)
	rep := checkLoad(t, g, loadgen.Cutover{Mark: "cutover started", Version: versionV4})
	mustBeZero(t, rep)
	copied(t, e, w, f, rep)
	if len(interrupted) != 3 {
		t.Errorf("interrupted %v; want in Copying, Replaying and CuttingOver", interrupted)
	}
	t.Logf("Copy upgrade figures, interrupted (%s): %s", strings.Join(interrupted, "; "), f)
}

// A rollback after the cutover: v4 serves on the copy for a while under load
// (tokens issued, refreshed and revoked there), then the rollback annotation; the
// backward replay and the cut back bring blue back on its own database with all of
// it: the ledger all zeros, through blue.
func testCopyRolledBackAfterCutover(t *testing.T) {
	e := newUpgradeEnv(t, "up-copy-back", copyUpgrade("3m"))
	g := e.startLoad(t)
	e.setImage(t, imageV4)
	f := &copyFigures{}
	w := watchCopy(f, g, func(p oauthv1alpha1.UpgradePhase, ts *oauthv1alpha1.TokenServer) {
		if p != oauthv1alpha1.UpgradeRollbackWindow {
			return
		}
		eventually(t, time.Minute, "v4 serving a part of the load alone", func() error {
			if n := g.Seen(func(r loadgen.Request) bool { return r.Version == versionV4 && r.Status == 200 }); n < 200 {
				return fmt.Errorf("%d answers from v4", n)
			}
			return nil
		})
		g.Mark("rollback requested")
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, oauthv1alpha1.AnnotationRollback, ts.Status.Upgrade.ID)
		if _, err := kubectl(t.Context(), "-n", e.ns, "patch", "tokenserver", "auth", "--type", "merge", "-p", patch); err != nil {
			t.Fatal(err)
		}
	})
	e.follow(t, 6*time.Minute, imageV4, w, ended...)
	rep := checkLoad(t, g, loadgen.Cutover{Mark: "rollback requested", Version: "dev"})
	mustBeZero(t, rep)
	rolledBack(t, e, w.seen, "RollbackRequested", oauthv1alpha1.ReasonUpgradeRolledBack, imageV4)
	if e.ts.Status.Database != nil {
		t.Errorf("status.database %+v after the cut back; want blue's own (unset)", e.ts.Status.Database)
	}
	if u := e.ts.Status.Upgrade; u.Copy == nil || !u.Copy.CutBack {
		t.Errorf("status.upgrade.copy %+v; want cutBack", u.Copy)
	}
	blue := openDatabase(t, e, "auth-db", "dsn")
	cleanedUp(t, e, blue)
	var copies int
	if err := blue.QueryRowContext(t.Context(), `SELECT count(*) FROM pg_database WHERE datname = $1`,
		"kubeoauth_"+e.ts.Status.Upgrade.ID).Scan(&copies); err != nil || copies != 0 {
		t.Errorf("the bundled copy kubeoauth_%s after the rollback: %d (%v); want it dropped", e.ts.Status.Upgrade.ID, copies, err)
	}
	t.Logf("Copy upgrade rolled back after the cutover: %s", f)
}
