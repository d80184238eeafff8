package main

import (
	"context"
	"log/slog"
	"math"
	"runtime/debug"
	"testing"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// TestTuneGC: with a container memory limit the server's GOMEMLIMIT is 90 % of it and
// GOGC 200; without one Go's defaults stay; GOMEMLIMIT and GOGC set in the
// environment win. (The cgroup reading itself is automemlimit's, tested there.)
func TestTuneGC(t *testing.T) {
	const mi = 1 << 20
	for _, tc := range []struct {
		name          string
		env           map[string]string
		limit         memlimit.Provider
		startLimit    int64 // the runtime's, from GOMEMLIMIT at start; 0: none
		wantMemLimit  int64
		wantGCPercent int
	}{
		{name: "a 256 Mi limit", limit: memlimit.Limit(256 * mi), wantMemLimit: 256 * mi * 9 / 10, wantGCPercent: 200},
		{name: "no limit", limit: func() (uint64, error) { return 0, memlimit.ErrNoLimit }, wantMemLimit: math.MaxInt64,
			wantGCPercent: 100},
		{name: "GOGC set", env: map[string]string{"GOGC": "50"}, limit: memlimit.Limit(256 * mi), wantMemLimit: 256 * mi * 9 / 10,
			wantGCPercent: 100},
		{name: "GOMEMLIMIT set", env: map[string]string{"GOMEMLIMIT": "100MiB"}, limit: memlimit.Limit(256 * mi),
			startLimit: 100 * mi, wantMemLimit: 100 * mi, wantGCPercent: 200},
		{name: "AUTOMEMLIMIT=off", env: map[string]string{"AUTOMEMLIMIT": "off"}, limit: memlimit.Limit(256 * mi),
			wantMemLimit: math.MaxInt64, wantGCPercent: 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			start := int64(math.MaxInt64)
			if tc.startLimit != 0 {
				start = tc.startLimit
			}
			memLimit, percent := debug.SetMemoryLimit(start), debug.SetGCPercent(100)
			ctx, cancel := context.WithCancel(context.Background())
			t.Cleanup(func() { cancel(); debug.SetMemoryLimit(memLimit); debug.SetGCPercent(percent) })
			tuneGC(ctx, tc.limit, slog.New(slog.DiscardHandler))
			if got := debug.SetMemoryLimit(-1); got != tc.wantMemLimit {
				t.Errorf("GOMEMLIMIT %d, want %d", got, tc.wantMemLimit)
			}
			if got := debug.SetGCPercent(percent); got != tc.wantGCPercent {
				t.Errorf("GOGC %d, want %d", got, tc.wantGCPercent)
			}
		})
	}
}
