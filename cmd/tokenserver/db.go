package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/tokenserver"
)

const dbUsage = "usage: tokenserver db copy|replay|cutover|cleanup [flags]"

// dbCmd runs the Copy upgrade's database commands (docs/upgrades.md "Copy and
// replay"); the operator's Jobs and Deployments run exactly these.
func dbCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(dbUsage)
	}
	switch args[0] {
	case "copy":
		return dbCopy(ctx, args[1:], stdout, stderr)
	case "replay":
		return dbReplay(ctx, args[1:], stderr)
	case "cutover":
		return dbCutover(ctx, args[1:], stdout, stderr)
	case "cleanup":
		return dbCleanup(ctx, args[1:], stdout)
	default:
		return fmt.Errorf("unknown db command %q\n%s", args[0], dbUsage)
	}
}

// copyDSNs are the flags naming the two databases of a copy or a replay.
func copyDSNs(fs *flag.FlagSet) func() (source, target string, err error) {
	src := fs.String("source-dsn-file", "", "File holding the DSN of the database copied (replay: read) from (required).")
	dst := fs.String("target-dsn-file", "", "File holding the DSN of the database copied (replay: written) to (required).")
	return func() (string, string, error) {
		if *src == "" || *dst == "" {
			return "", "", errors.New("--source-dsn-file and --target-dsn-file are required")
		}
		s, err := tokenserver.ReadSecretFile(*src)
		if err != nil {
			return "", "", fmt.Errorf("--source-dsn-file: %w", err)
		}
		d, err := tokenserver.ReadSecretFile(*dst)
		if err != nil {
			return "", "", fmt.Errorf("--target-dsn-file: %w", err)
		}
		return s, d, nil
	}
}

func dbCopy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("db copy", flag.ContinueOnError)
	dsns := copyDSNs(fs)
	upgradeID := fs.String("upgrade-id", "", "The upgrade the copy is for (required); a rerun with the same one resumes it.")
	create := fs.Bool("create-database", false, "Create the target DSN's database on the source's server when it does not exist.")
	forwardTo := fs.String("forward-to", "", "URL of the serving version's servers: the copy is fenced when done, so that "+
		"servers started on it forward every request there until the cutover.")
	termLog := fs.String("termination-log", defaultTerminationLog, "Also write the report (or the error) to this file, "+
		"the container's termination message, if it exists.")
	if err := parse(fs, args); err != nil {
		return err
	}
	res, err := func() (postgres.CopyResult, error) {
		if *upgradeID == "" {
			return postgres.CopyResult{}, errors.New("--upgrade-id is required")
		}
		srcDSN, dstDSN, err := dsns()
		if err != nil {
			return postgres.CopyResult{}, err
		}
		opts := postgres.CopyOptions{UpgradeID: *upgradeID, Migrations: postgres.Migrations(), CreateDatabase: *create, ForwardTo: *forwardTo,
			Log: lineLog(stderr)}
		if *create {
			if opts.TargetDatabase, err = postgres.DatabaseName(dstDSN); err != nil {
				return postgres.CopyResult{}, fmt.Errorf("--target-dsn-file: %w", err)
			}
		}
		source, err := postgres.OpenDB(srcDSN, 4)
		if err != nil {
			return postgres.CopyResult{}, fmt.Errorf("--source-dsn-file: %w", err)
		}
		defer func() { _ = source.Close() }()
		target, err := postgres.OpenDB(dstDSN, 4)
		if err != nil {
			return postgres.CopyResult{}, fmt.Errorf("--target-dsn-file: %w", err)
		}
		defer func() { _ = target.Close() }()
		return postgres.CopyDatabase(ctx, source, target, opts)
	}()
	if err != nil {
		writeTerminationLog(*termLog, []byte("db copy: "+err.Error()))
		return err
	}
	out, err := json.Marshal(res)
	if err != nil {
		return err
	}
	writeTerminationLog(*termLog, out)
	_, err = fmt.Fprintf(stdout, "%s\n", out)
	return err
}

// replayMetrics are what `db replay` serves on /metrics.
type replayMetrics struct {
	registry                 *prometheus.Registry
	pending, lag             prometheus.Gauge
	changes, passes, errored prometheus.Counter
}

func newReplayMetrics() *replayMetrics {
	m := &replayMetrics{
		registry: prometheus.NewRegistry(),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubeoauth_replay_pending_changes",
			Help: "Changes on the source after the last pass's snapshot, still to replay."}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kubeoauth_replay_lag_seconds",
			Help: "Age of the oldest change still to replay (0: none)."}),
		changes: prometheus.NewCounter(prometheus.CounterOpts{Name: "kubeoauth_replay_changes_total",
			Help: "Rows written or deleted on the target by replay passes."}),
		passes: prometheus.NewCounter(prometheus.CounterOpts{Name: "kubeoauth_replay_passes_total",
			Help: "Replay passes that succeeded."}),
		errored: prometheus.NewCounter(prometheus.CounterOpts{Name: "kubeoauth_replay_errors_total",
			Help: "Replay passes that failed (each is retried at the next interval)."}),
	}
	m.registry.MustRegister(m.pending, m.lag, m.changes, m.passes, m.errored)
	return m
}

// replayReadyWithin is how recent the last successful pass must be for /readyz.
const replayReadyWithin = 10 * time.Second

// replayStopGrace is how long the pass in flight at SIGTERM may take to finish; a
// pass cut short leaves nothing behind, so this only saves redoing it.
const replayStopGrace = 10 * time.Second

func dbReplay(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("db replay", flag.ContinueOnError)
	dsns := copyDSNs(fs)
	upgradeID := fs.String("upgrade-id", "", "The upgrade whose rows are replayed (required).")
	direction := fs.String("direction", postgres.DirectionForward, "forward (source: the serving version's database, target: "+
		"the copy) or backward (after cutover: source the copy, target the original).")
	interval := fs.Duration("interval", 200*time.Millisecond, "Pause between passes.")
	metricsAddr := fs.String("metrics-address", ":4446", "Address of /metrics, /readyz and /healthz.")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *upgradeID == "":
		return errors.New("--upgrade-id is required")
	case *direction != postgres.DirectionForward && *direction != postgres.DirectionBackward:
		return fmt.Errorf("--direction %q: want forward or backward", *direction)
	case *interval <= 0:
		return errors.New("--interval must be positive")
	}
	srcDSN, dstDSN, err := dsns()
	if err != nil {
		return err
	}
	source, err := postgres.OpenDB(srcDSN, 2)
	if err != nil {
		return fmt.Errorf("--source-dsn-file: %w", err)
	}
	defer func() { _ = source.Close() }()
	target, err := postgres.OpenDB(dstDSN, 2)
	if err != nil {
		return fmt.Errorf("--target-dsn-file: %w", err)
	}
	defer func() { _ = target.Close() }()
	log := slog.New(slog.NewJSONHandler(stderr, nil)).With("upgrade", *upgradeID, "direction", *direction)

	m := newReplayMetrics()
	var lastOK atomic.Int64 // unix nanoseconds of the last successful pass
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if last := lastOK.Load(); last == 0 || time.Since(time.Unix(0, last)) > replayReadyWithin {
			http.Error(w, "no replay pass succeeded in the last "+replayReadyWithin.String(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	ln, err := net.Listen("tcp", *metricsAddr)
	if err != nil {
		return fmt.Errorf("--metrics-address: %w", err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()

	// SIGTERM ends the loop after the pass in flight.
	passCtx, cancelPass := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelPass()
	stopGrace := context.AfterFunc(ctx, func() { time.AfterFunc(replayStopGrace, cancelPass) })
	defer stopGrace()
	log.Info("replaying", "interval", *interval, "metrics", ln.Addr().String())
	opts := postgres.ReplayOptions{UpgradeID: *upgradeID, Direction: *direction, Migrations: postgres.Migrations(),
		Log: func(format string, a ...any) { log.Debug(fmt.Sprintf(format, a...)) }}
	for ctx.Err() == nil {
		res, err := postgres.ReplayPass(passCtx, source, target, opts)
		if err != nil {
			m.errored.Inc()
			log.Error("replay pass failed", "err", err)
		} else {
			m.passes.Inc()
			m.changes.Add(float64(res.Replayed))
			m.pending.Set(float64(res.Pending))
			m.lag.Set(res.Lag.Seconds())
			lastOK.Store(time.Now().UnixNano())
			if res.Replayed > 0 {
				log.Info("replayed", "rows", res.Replayed, "pending", res.Pending, "lag", res.Lag.String())
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(*interval):
		}
	}
	log.Info("stopped")
	return nil
}

// ExitLeaseExpired is db cutover's exit code when the fence's lease ran out before
// the point of no return: the old side resumed by itself, nothing changed, and the
// operator tries the cutover again.
const ExitLeaseExpired = 4

// cutoverReport is what db cutover prints and writes to its termination message.
type cutoverReport struct {
	FenceHoldSeconds float64 `json:"fenceHoldSeconds"`
	Replayed         int     `json:"replayed"`
	Resumed          bool    `json:"resumed"`
}

func dbCutover(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("db cutover", flag.ContinueOnError)
	from := fs.String("from-dsn-file", "", "File holding the DSN of the database whose servers are fenced: the serving "+
		"version's (required).")
	to := fs.String("to-dsn-file", "", "File holding the DSN of the database that takes over (required).")
	upgradeID := fs.String("upgrade-id", "", "The upgrade cut over (required); a rerun with the same one resumes it.")
	direction := fs.String("direction", postgres.DirectionForward, "forward (from: the serving version's database, to: "+
		"the copy) or backward (a rollback after cutover: from the copy, to the original).")
	forwardTo := fs.String("forward-to", "", "URL the fenced servers forward requests to once cut over (required).")
	lease := fs.Duration("lease", postgres.DefaultFenceLease, "How long the fenced servers hold write requests at most "+
		"before they resume by themselves.")
	termLog := fs.String("termination-log", defaultTerminationLog, "Also write the report (or the error) to this file, "+
		"the container's termination message, if it exists.")
	if err := parse(fs, args); err != nil {
		return err
	}
	res, err := func() (postgres.CutoverResult, error) {
		switch {
		case *upgradeID == "":
			return postgres.CutoverResult{}, errors.New("--upgrade-id is required")
		case *forwardTo == "":
			return postgres.CutoverResult{}, errors.New("--forward-to is required")
		case *from == "" || *to == "":
			return postgres.CutoverResult{}, errors.New("--from-dsn-file and --to-dsn-file are required")
		}
		fromDSN, err := tokenserver.ReadSecretFile(*from)
		if err != nil {
			return postgres.CutoverResult{}, fmt.Errorf("--from-dsn-file: %w", err)
		}
		toDSN, err := tokenserver.ReadSecretFile(*to)
		if err != nil {
			return postgres.CutoverResult{}, fmt.Errorf("--to-dsn-file: %w", err)
		}
		// Cutover keeps one of from's connections for its lock; the drain and its
		// own queries need more.
		fromDB, err := postgres.OpenDB(fromDSN, 6)
		if err != nil {
			return postgres.CutoverResult{}, fmt.Errorf("--from-dsn-file: %w", err)
		}
		defer func() { _ = fromDB.Close() }()
		toDB, err := postgres.OpenDB(toDSN, 4)
		if err != nil {
			return postgres.CutoverResult{}, fmt.Errorf("--to-dsn-file: %w", err)
		}
		defer func() { _ = toDB.Close() }()
		logf := lineLog(stderr)
		replay := postgres.ReplayOptions{UpgradeID: *upgradeID, Direction: *direction, Migrations: postgres.Migrations()}
		return postgres.Cutover(ctx, fromDB, toDB, postgres.CutoverOptions{UpgradeID: *upgradeID, Direction: *direction,
			ForwardTo: *forwardTo, Lease: *lease, Log: logf,
			Drain: func(ctx context.Context) (int, error) {
				r, err := postgres.ReplayPass(ctx, fromDB, toDB, replay)
				return r.Replayed, err
			}})
	}()
	if err != nil {
		writeTerminationLog(*termLog, []byte("db cutover: "+err.Error()))
		return err
	}
	out, err := json.Marshal(cutoverReport{FenceHoldSeconds: res.FenceHold.Seconds(), Replayed: res.Replayed, Resumed: res.Resumed})
	if err != nil {
		return err
	}
	writeTerminationLog(*termLog, out)
	_, err = fmt.Fprintf(stdout, "%s\n", out)
	return err
}

func dbCleanup(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("db cleanup", flag.ContinueOnError)
	getDSN := dsnFlags(fs)
	dropDB := fs.String("drop-database", "", "Also drop this database, on the DSN's server (the bundled copy after a rollback).")
	lockTimeout := fs.Duration("lock-timeout", postgres.DefaultLockTimeout, "The longest a trigger's removal waits "+
		"for a lock at a time, so that it never stalls token writes.")
	if err := parse(fs, args); err != nil {
		return err
	}
	db, err := openDSN(getDSN)
	if err != nil {
		return err
	}
	defer func() { _ = db.Close() }()
	logf := lineLog(stdout)
	if err := postgres.CleanupUpgrade(ctx, db, postgres.CaptureOptions{LockTimeout: *lockTimeout, Log: logf}); err != nil {
		return err
	}
	logf("removed capture, fence triggers and %s", postgres.UpgradeSchema)
	if *dropDB != "" {
		if err := postgres.DropDatabase(ctx, db, *dropDB); err != nil {
			return err
		}
		logf("dropped database %s", *dropDB)
	}
	return nil
}

// exitCode is the process's exit code for err: ExitLeaseExpired when a cutover's lease
// ran out (tried again later); ExitMigrationFailed for a failure
// another run would meet again (a migration or a copy refused), so that the Job
// fails at once; 1 otherwise, retried.
func exitCode(err error) int {
	if errors.Is(err, postgres.ErrLeaseExpired) {
		return ExitLeaseExpired
	}
	var d interface{ Deterministic() bool }
	if errors.As(err, &d) && d.Deterministic() {
		return postgres.ExitMigrationFailed
	}
	return 1
}
