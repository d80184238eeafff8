package main

import (
	"context"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// gcPercent is the token server's GOGC in a container with a memory limit. Its live
// heap is tens of MB beside its limit (256 Mi by default), and at Go's default of
// 100 the collector ran at twice the live heap: 10-18 % of the server's CPU per
// token in make bench-tokenserver, 12-18 % less at 300. 200 halves the collections
// and, with the memory limit below, keeps the heap within the container.
const gcPercent = 200

// tuneGC sizes the garbage collector to the container the server runs in: a memory
// limit (GOMEMLIMIT) at 90 % of the container's, read from its cgroup and read again
// each minute (a resize in place, a limit set at admission by a LimitRange or a
// VerticalPodAutoscaler: what the pod template says is not what the pod has), so
// that near the limit it collects harder rather than being OOM-killed; and, where
// there is a limit, GOGC 200. GOMEMLIMIT or GOGC in the environment win, as
// AUTOMEMLIMIT=off does. automemlimit reads cgroups v1 and v2 as the runtime does not.
func tuneGC(ctx context.Context, provider memlimit.Provider, log *slog.Logger) {
	limit, err := memlimit.Set(memlimit.WithRatio(0.9), memlimit.WithProvider(provider), memlimit.WithLogger(log),
		memlimit.WithRefreshInterval(ctx, time.Minute))
	if err != nil {
		log.Warn("no memory limit for the garbage collector", "error", err)
		return
	}
	if limit == math.MaxInt64 {
		return // no limit: Go's defaults
	}
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
}
