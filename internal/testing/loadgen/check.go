package loadgen

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Cutover asks Check for the time from a marked moment until all traffic was
// served by one version.
type Cutover struct {
	Mark, Version string
}

// CutoverFigure is the answer to a Cutover.
type CutoverFigure struct {
	Cutover
	// After is the time from the mark to the end of the last response after it
	// that another version gave (0 when there was none).
	After time.Duration
	// Reached: at least one response of Version came after that.
	Reached bool
	// Err says why there is no figure (an unknown mark).
	Err string
}

// KindFigures counts the requests of one kind.
type KindFigures struct {
	Requests, OK, TransportErrors, ServerErrors, Unexpected int
}

// Report is what the ledger and the final check found. The figures under "must be
// zero" are failures; Failures lists those that are not.
type Report struct {
	Load time.Duration // from Start to Stop
	// Marks are the moments the test marked.
	Marks map[string]time.Time
	Kinds map[Kind]*KindFigures
	// Versions counts the responses of each version.
	Versions map[string]int
	Cutovers []CutoverFigure

	TokensIssued, TokensRevoked, GrantsDeleted, ChainRefreshes int
	// Checked: tokens the final check asked about.
	TokensChecked, ChainsChecked int
	// DroppedTicks: the workers were all busy; the rate asked for was not met.
	DroppedTicks int

	// Must be zero.
	TransportErrors int
	ServerErrors    int // 5xx
	// Unexpected: an answer the ledger did not expect — a 4xx (a refused client,
	// a lost session), or a success where a refusal was due (a spent refresh token
	// accepted).
	Unexpected int
	// LostTokens: issued, neither revoked nor superseded nor expired, and not active.
	LostTokens int
	// BrokenChains: a chain head that no longer refreshes.
	BrokenChains int
	// RevocationsLost: revoked (or under a deleted grant), yet active at
	// introspection or accepted at /userinfo.
	RevocationsLost int
	// InactiveDuringRun: a token that must be active was inactive at an
	// introspection during the load.
	InactiveDuringRun int
	// SupersededActive: an access token its chain's refresh replaced, or a rotated
	// refresh token past the grace period, still active.
	SupersededActive int

	// Examples of each failure, a few per figure, for the log.
	Examples []string

	loadRequests int
}

// Failures names the must-be-zero figures that are not zero; empty means the run
// passed.
func (r *Report) Failures() []string {
	var out []string
	for _, f := range []struct {
		name string
		n    int
	}{{"transport errors", r.TransportErrors}, {"5xx", r.ServerErrors}, {"unexpected answers", r.Unexpected},
		{"lost tokens", r.LostTokens}, {"broken chains", r.BrokenChains}, {"revocations lost", r.RevocationsLost},
		{"inactive during run", r.InactiveDuringRun}, {"superseded active", r.SupersededActive}} {
		if f.n != 0 {
			out = append(out, fmt.Sprintf("%s: %d", f.name, f.n))
		}
	}
	return out
}

// String is the report for a log or a doc: the must-be-zero figures first.
func (r *Report) String() string {
	var b strings.Builder
	requests := 0
	for _, k := range r.Kinds {
		requests += k.Requests
	}
	fmt.Fprintf(&b, "load %s, %d requests (%.0f/s during the load), %d ticks dropped\n", r.Load.Round(time.Millisecond),
		requests, float64(r.loadRequests)/max(r.Load.Seconds(), 1e-9), r.DroppedTicks)
	marks := make([]string, 0, len(r.Marks))
	for m := range r.Marks {
		marks = append(marks, m)
	}
	slices.SortFunc(marks, func(a, b string) int { return r.Marks[a].Compare(r.Marks[b]) })
	for _, m := range marks {
		fmt.Fprintf(&b, "  mark %q at %s\n", m, r.Marks[m].Format("15:04:05.000"))
	}
	fmt.Fprintf(&b, "must be zero: transport errors %d, 5xx %d, unexpected answers %d, lost tokens %d, broken chains %d, "+
		"revocations lost %d, inactive during run %d, superseded active %d\n", r.TransportErrors, r.ServerErrors, r.Unexpected,
		r.LostTokens, r.BrokenChains, r.RevocationsLost, r.InactiveDuringRun, r.SupersededActive)
	fmt.Fprintf(&b, "ledger: %d tokens issued, %d revoked, %d grants deleted, %d chain refreshes; checked %d tokens, %d chains\n",
		r.TokensIssued, r.TokensRevoked, r.GrantsDeleted, r.ChainRefreshes, r.TokensChecked, r.ChainsChecked)
	kinds := make([]Kind, 0, len(r.Kinds))
	for k := range r.Kinds {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		f := r.Kinds[k]
		fmt.Fprintf(&b, "  %-16s %6d requests, %6d ok, %d transport errors, %d 5xx, %d unexpected\n", k, f.Requests, f.OK,
			f.TransportErrors, f.ServerErrors, f.Unexpected)
	}
	versions := make([]string, 0, len(r.Versions))
	for v := range r.Versions {
		versions = append(versions, v)
	}
	slices.Sort(versions)
	for _, v := range versions {
		fmt.Fprintf(&b, "  version %s: %d responses\n", v, r.Versions[v])
	}
	for _, c := range r.Cutovers {
		switch {
		case c.Err != "":
			fmt.Fprintf(&b, "  from %q to all traffic on %s: %s\n", c.Mark, c.Version, c.Err)
		case !c.Reached:
			fmt.Fprintf(&b, "  from %q to all traffic on %s: not reached\n", c.Mark, c.Version)
		default:
			fmt.Fprintf(&b, "  from %q to all traffic on %s: %s\n", c.Mark, c.Version, c.After.Round(time.Millisecond))
		}
	}
	for _, e := range r.Examples {
		fmt.Fprintf(&b, "  example: %s\n", e)
	}
	return b.String()
}

const examplesPerFigure = 3

func (r *Report) example(count *int, format string, args ...any) {
	*count++
	if *count <= examplesPerFigure {
		r.Examples = append(r.Examples, fmt.Sprintf(format, args...))
	}
}

// Check verifies the ledger through the public endpoints, after Stop: every
// token the ledger holds to be live introspects active, every chain head
// refreshes, every revoked token introspects inactive and is refused at /userinfo.
// The requests it makes are counted like the load's. It refreshes the chain heads,
// so it can run once.
func (g *Generator) Check(ctx context.Context, cutovers ...Cutover) (*Report, error) {
	r := &Report{Kinds: map[Kind]*KindFigures{}, Versions: map[string]int{}}
	_, toks, _ := g.ledger.snapshot()
	g.checkTokens(ctx, r, toks)
	g.checkChains(ctx, r)
	reqs, _, marks := g.ledger.snapshot()
	g.ledger.update(func() {
		r.DroppedTicks, r.InactiveDuringRun, r.GrantsDeleted = g.ledger.dropped, g.ledger.inactiveDuringRun, g.ledger.grantsDeleted
	})
	r.Marks = marks
	r.count(reqs, g.started, g.stopped)
	for _, c := range cutovers {
		r.Cutovers = append(r.Cutovers, cutover(reqs, marks, c))
	}
	return r, ctx.Err()
}

// verdict is what the check found wrong with one token, if anything.
type verdict struct {
	lost, revocationLost, supersededActive bool
	what                                   string
}

// checkTokens asks the server about every token whose fate the ledger knows, four
// at a time.
func (g *Generator) checkTokens(ctx context.Context, r *Report, toks []token) {
	now := time.Now()
	verdicts := make([]verdict, len(toks))
	var wg sync.WaitGroup
	work := make(chan int)
	for range 4 {
		wg.Go(func() {
			for i := range work {
				verdicts[i] = g.checkToken(ctx, &toks[i])
			}
		})
	}
	for i := range toks {
		t := &toks[i]
		r.TokensIssued++
		if t.revoked() {
			r.TokensRevoked++
		}
		if t.chain >= 0 && !t.refresh && !t.supersededAt.IsZero() {
			r.ChainRefreshes++
		}
		// Uncertain tokens, those about to expire and refresh tokens still in
		// their grace period prove nothing.
		inGrace := t.refresh && !t.supersededAt.IsZero() && now.Sub(t.supersededAt) < g.cfg.RefreshGracePeriod+2*time.Second
		expiring := !t.revoked() && t.supersededAt.IsZero() && time.Until(t.expiresAt) < 10*time.Second
		if t.uncertain || inGrace || expiring {
			continue
		}
		r.TokensChecked++
		select {
		case work <- i:
		case <-ctx.Done():
		}
	}
	close(work)
	wg.Wait()
	for i, v := range verdicts {
		t := &toks[i]
		switch {
		case v.lost:
			r.example(&r.LostTokens, "lost token: %s issued at %s to %s, %s", kindOf(t), t.issuedAt.Format(time.TimeOnly), t.client, v.what)
		case v.supersededActive:
			r.example(&r.SupersededActive, "superseded %s issued at %s, replaced at %s, %s", kindOf(t),
				t.issuedAt.Format(time.TimeOnly), t.supersededAt.Format(time.TimeOnly), v.what)
		case v.revocationLost:
			r.example(&r.RevocationsLost, "revocation lost: %s issued at %s to %s, revoked at %s, %s", kindOf(t),
				t.issuedAt.Format(time.TimeOnly), t.client, revokedAt(t).Format(time.TimeOnly), v.what)
		}
	}
}

func (g *Generator) checkToken(ctx context.Context, t *token) verdict {
	switch {
	case !t.supersededAt.IsZero():
		if active, ok := g.introspect(ctx, CheckIntrospect, t); ok && active {
			return verdict{supersededActive: true, what: "active at introspection"}
		}
	case t.revoked():
		var what []string
		if active, ok := g.introspect(ctx, CheckIntrospect, t); ok && active {
			what = append(what, "active at introspection")
		}
		if !t.refresh && t.openid {
			if refused, ok := g.userinfoRefused(ctx, t); ok && !refused {
				what = append(what, "accepted at /userinfo")
			}
		}
		if len(what) > 0 {
			return verdict{revocationLost: true, what: strings.Join(what, ", ")}
		}
	default:
		if active, ok := g.introspect(ctx, CheckIntrospect, t); ok && !active {
			return verdict{lost: true, what: "inactive at introspection"}
		}
	}
	return verdict{}
}

// checkChains refreshes every chain head once.
func (g *Generator) checkChains(ctx context.Context, r *Report) {
	for i, c := range g.chains {
		r.ChainsChecked++
		status, body := g.post(ctx, CheckRefresh, g.pooled, "/oauth2/token", g.cfg.ChainClient, refreshForm(c.rt), expectStatus(http.StatusOK))
		if status != http.StatusOK {
			r.example(&r.BrokenChains, "broken chain %d: its head (issued at %s) refreshes with %s", i,
				c.rt.issuedAt.Format(time.TimeOnly), describe(status, body))
		}
	}
}

func kindOf(t *token) string {
	kind := "access token"
	if t.refresh {
		kind = "refresh token"
	}
	switch {
	case t.chain >= 0:
		return fmt.Sprintf("%s of chain %d", kind, t.chain)
	case t.grant != "":
		return kind + " under grant " + t.grant
	}
	return kind
}

func revokedAt(t *token) time.Time {
	if !t.revokedAt.IsZero() {
		return t.revokedAt
	}
	return t.grantDeletedAt
}

// count adds up the requests, the load's and the check's.
func (r *Report) count(reqs []Request, started, stopped time.Time) {
	r.Load = stopped.Sub(started)
	for _, q := range reqs {
		f := r.Kinds[q.Kind]
		if f == nil {
			f = &KindFigures{}
			r.Kinds[q.Kind] = f
		}
		f.Requests++
		if !q.Start.Before(started) && q.Start.Before(stopped) {
			r.loadRequests++
		}
		if q.Status != 0 {
			r.Versions[q.Version]++
		}
		switch {
		case q.Err != "":
			f.TransportErrors++
			r.example(&r.TransportErrors, "%s at %s: %s", q.Kind, q.Start.Format(time.TimeOnly), q.Err)
		case q.Status >= 500:
			f.ServerErrors++
			r.example(&r.ServerErrors, "%s at %s from %s: %s", q.Kind, q.Start.Format(time.TimeOnly), q.Version, q.Detail)
		case !q.Expected:
			f.Unexpected++
			r.example(&r.Unexpected, "%s at %s from %s: %s", q.Kind, q.Start.Format(time.TimeOnly), q.Version, q.Detail)
		default:
			f.OK++
		}
	}
}

// cutover finds, among the HTTP answers that started after the mark, the last one
// another version gave.
func cutover(reqs []Request, marks map[string]time.Time, c Cutover) CutoverFigure {
	fig := CutoverFigure{Cutover: c}
	at, ok := marks[c.Mark]
	if !ok {
		fig.Err = "no such mark"
		return fig
	}
	var after []Request
	for _, q := range reqs {
		if q.Status != 0 && !q.Start.Before(at) && !strings.HasPrefix(string(q.Kind), "check-") {
			after = append(after, q)
		}
	}
	sort.Slice(after, func(i, j int) bool { return after[i].Start.Before(after[j].Start) })
	lastOther := at
	for _, q := range after {
		if q.Version != c.Version && q.End.After(lastOther) {
			lastOther = q.End
		}
	}
	fig.After = lastOther.Sub(at)
	for _, q := range after {
		if q.Version == c.Version && q.Start.After(lastOther) {
			fig.Reached = true
			break
		}
	}
	return fig
}
