// Command bench-tokenserver measures the token server (`make bench-tokenserver`): it
// builds cmd/tokenserver, runs it as its own process on a throwaway PostgreSQL with
// PostgreSQL's default, durable settings (fsync and synchronous_commit on), and
// drives it from this process at a fixed concurrency over keep-alive connections:
// client_credentials tokens, introspections, and refreshes (each worker following its
// own rotating chain). In the same run pgbench measures PostgreSQL's own ceiling on
// this machine, one single-row INSERT per transaction at the same concurrency over
// the same socket, and each phase is printed as a share of it, with requests per
// second, p50/p99 latency, commits and WAL flushes per request, and the server's peak
// RSS. docs/benchmarks.md records the figures.
package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"

	"github.com/prometheus/procfs"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/randsecret"
	"github.com/kubeoauth/kubeoauth/internal/testing/devserver"
	"github.com/kubeoauth/kubeoauth/internal/testing/testpg"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench-tokenserver:", err)
		os.Exit(1)
	}
}

var (
	concurrency = flag.Int("c", 64, "concurrent workers")
	duration    = flag.Duration("d", 10*time.Second, "duration of each phase")
	statements  = flag.Bool("statements", false, "load pg_stat_statements and print each phase's statements by PostgreSQL time")
	cpuProfile  = flag.String("cpuprofile", "",
		"write the server's CPU profile of the token phase to this file, and of the refresh phase to this file with .refresh appended")
)

const redirectURI = "http://127.0.0.1:5555/callback"

func run() error {
	flag.Parse()
	ctx := context.Background()
	fmt.Println("==> building cmd/tokenserver")
	bin, err := os.MkdirTemp("", "kubeoauth-bench-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(bin) }()
	if err := devserver.Build(bin, "tokenserver"); err != nil {
		return err
	}
	fmt.Println("==> starting a throwaway PostgreSQL")
	env, err := devserver.Start(ctx, devserver.Options{Users: map[string]string{"alice": "alice"}, PasswordCost: bcrypt.MinCost,
		Durable: true, PGSettings: pgSettings()})
	defer func() { _ = env.Stop() }()
	if err != nil {
		return err
	}
	addrs, err := devserver.FreeAddrs(2)
	if err != nil {
		return err
	}
	pub, adm := addrs[0], addrs[1]
	issuer := "http://" + pub
	srv, admin, err := env.Serve(ctx, filepath.Join(bin, "tokenserver"), pub, adm,
		"--refresh-grace-period", "30s", "--pprof-listen", "127.0.0.1:6060")
	if err != nil {
		return err
	}
	secret := randsecret.MustNew(32)
	client := &adminapi.Client{ID: "bench", Secret: secret, OwnerNamespace: "bench", ClientMetadata: adminapi.ClientMetadata{
		Name: "Bench", GrantTypes: []string{"client_credentials", "authorization_code", "refresh_token"},
		RedirectURIs: []string{redirectURI}, Scopes: []string{"openid", "offline_access", "zones.read"},
		TokenEndpointAuthMethod: "client_secret_basic"}}
	if _, err := admin.PutClient(ctx, client); err != nil {
		return err
	}
	grant := &adminapi.Grant{ClientID: "bench", Subject: "alice", Scopes: []string{"openid", "offline_access"}}
	if _, err := admin.PutGrant(ctx, grant); err != nil {
		return err
	}

	hc := &http.Client{Transport: &http.Transport{MaxIdleConns: *concurrency * 2, MaxIdleConnsPerHost: *concurrency * 2},
		Timeout: 10 * time.Second}
	tokenForm := url.Values{"grant_type": {"client_credentials"}, "scope": {"zones.read"}}.Encode()
	// What the phases read of an answer, decoded as an OAuth client library would (into
	// a struct, golang.org/x/oauth2's way), and checked: an answer without its token,
	// or an introspection that finds the token inactive, counts as an error.
	type answer struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
		Active       *bool  `json:"active"`
	}
	post := func(path, form string) (*answer, error) {
		req, _ := http.NewRequest(http.MethodPost, issuer+path, strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth("bench", secret)
		resp, err := hc.Do(req)
		if err != nil {
			return nil, err
		}
		defer func() { _ = resp.Body.Close() }()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return nil, fmt.Errorf("%s: %d %s", path, resp.StatusCode, body)
		}
		out := &answer{}
		if err := json.Unmarshal(body, out); err != nil {
			return nil, err
		}
		if out.AccessToken == "" && (out.Active == nil || !*out.Active) {
			return nil, fmt.Errorf("%s: neither a token nor an active introspection: %s", path, body)
		}
		return out, nil
	}
	tok, err := post("/oauth2/token", tokenForm)
	if err != nil {
		return err
	}
	introspectForm := url.Values{"token": {tok.AccessToken}}.Encode()
	db, err := sql.Open("postgres", env.DSN)
	if err != nil {
		return err
	}
	defer func() { _ = db.Close() }()
	var settings string
	if err := db.QueryRowContext(ctx, `SELECT format('fsync=%s synchronous_commit=%s full_page_writes=%s',
    current_setting('fsync'), current_setting('synchronous_commit'), current_setting('full_page_writes'))`).Scan(&settings); err != nil {
		return err
	}
	fmt.Println("==> PostgreSQL:", settings)
	if *statements {
		if _, err := db.ExecContext(ctx, `CREATE EXTENSION pg_stat_statements`); err != nil {
			return err
		}
	}
	var results []result
	serverPID, postmasterPID = srv.Process.Pid, env.PG().PID()

	fmt.Printf("==> %d workers, %s per phase, GOMAXPROCS %d, %s\n", *concurrency, *duration, runtime.GOMAXPROCS(0), cpuModel())
	profiled := make(chan error, 1)
	if *cpuProfile != "" {
		go func() { profiled <- saveProfile(*cpuProfile, *duration) }()
	} else {
		profiled <- nil
	}
	results = append(results, phase(db, "client_credentials tokens", func(int) func() error {
		return func() error { _, err := post("/oauth2/token", tokenForm); return err }
	}))
	if err := <-profiled; err != nil {
		return err
	}
	ceiling, err := insertCeiling(ctx, db, env.PG())
	if err != nil {
		return err
	}
	results = append(results, phase(db, "introspections", func(int) func() error {
		return func() error { _, err := post("/oauth2/introspect", introspectForm); return err }
	}))
	// Refreshes of chains whose grant includes openid sign a new ID token each
	// (OpenID Connect clients such as kubectl's OIDC login need it); a plain OAuth 2.0
	// client's (offline_access only) do not. The first are profiled.
	for _, scope := range []string{"openid offline_access", "offline_access"} {
		chains := make([]string, *concurrency)
		for i := range chains {
			if chains[i], err = refreshTokenByCodeFlow(issuer, secret, scope); err != nil {
				return err
			}
		}
		name := "refreshes"
		if !strings.Contains(scope, "openid") {
			name = "refreshes, no ID token"
		} else if *cpuProfile != "" {
			go func() { profiled <- saveProfile(*cpuProfile+".refresh", *duration) }()
		} else {
			profiled <- nil
		}
		results = append(results, phase(db, name, func(w int) func() error {
			return func() error {
				out, err := post("/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {chains[w]}}.Encode())
				if err == nil {
					chains[w] = out.RefreshToken
				}
				return err
			}
		}))
		if name == "refreshes" {
			if err := <-profiled; err != nil {
				return err
			}
		}
	}
	fmt.Printf("\nserver peak RSS: %s\n", devserver.PeakRSS(srv.Process.Pid))
	fmt.Printf("PostgreSQL single-row INSERT ceiling (pgbench, %d clients): %.0f/s, mean latency %.2fms\n",
		*concurrency, ceiling.rate, ceiling.meanMS)
	for _, r := range results {
		fmt.Printf("%-26s %8.0f/s  %5.1f%% of the ceiling  p50 %6.2fms  p99 %6.2fms\n", r.name, r.rate,
			100*r.rate/ceiling.rate, ms(r.p50), ms(r.p99))
	}
	fmt.Printf("refreshes / tokens: %.2f (no ID token: %.2f)\n", results[2].rate/results[0].rate, results[3].rate/results[0].rate)
	// Other work on the machine moves the rates from one phase to the next; the CPU
	// each request costs moves far less. What the machine's cores would do for each
	// phase alone, were the work CPU-bound and nothing else running:
	cores := float64(runtime.NumCPU())
	fmt.Printf("CPU-bound estimate (%.0f cores / CPU per request): INSERT ceiling %.0f/s", cores, cores*1e6/ceiling.cpuUS)
	for _, r := range results {
		fmt.Printf(", %s %.0f/s (%.0f%%)", r.name, cores*1e6/r.cpuUS, 100*ceiling.cpuUS/r.cpuUS)
	}
	fmt.Printf("; refreshes / tokens %.2f (no ID token: %.2f)\n", results[0].cpuUS/results[2].cpuUS, results[0].cpuUS/results[3].cpuUS)
	return nil
}

func pgSettings() []string {
	if !*statements {
		return nil
	}
	return []string{"shared_preload_libraries=pg_stat_statements", "pg_stat_statements.track_utility=on",
		"pg_stat_statements.track_planning=on"}
}

// printStatements prints the statements PostgreSQL spent most time on since the last
// call, per request of the phase, and resets the counts.
func printStatements(db *sql.DB, n float64) {
	if !*statements {
		return
	}
	// Statements that differ only in their parameters' numbers (a batch's, by its
	// size) count as one; the time is planning's and execution's.
	rows, err := db.Query(`SELECT sum(calls), sum(total_plan_time + total_exec_time),
    left(regexp_replace(regexp_replace(query, '\$[0-9]+', '$n', 'g'), '\s+', ' ', 'g'), 60) q
FROM pg_stat_statements GROUP BY q ORDER BY 2 DESC LIMIT 8`)
	if err != nil {
		fmt.Println("  pg_stat_statements:", err)
		return
	}
	defer func() { _ = rows.Close() }()
	for rows.Next() {
		var calls, total float64
		var query string
		if rows.Scan(&calls, &total, &query) == nil {
			fmt.Printf("    %5.2f calls %6.1f µs  %s\n", calls/n, total*1000/n, query)
		}
	}
	if err := rows.Err(); err != nil {
		fmt.Println("  pg_stat_statements:", err)
	}
	_, _ = db.Exec(`SELECT pg_stat_statements_reset()`)
}

// result is one phase's figures.
type result struct {
	name     string
	rate     float64
	p50, p99 time.Duration
	// cpuUS is the CPU the request cost the server, PostgreSQL and the load
	// generator together.
	cpuUS float64
}

// dbCounters are PostgreSQL's cumulative counts of commits and WAL flushes: per
// request, they say how many transactions and fsyncs a phase costs.
type dbCounters struct {
	commits, walSyncs float64
	// Row updates of the tokens table (a refresh token's rotation), and how many of
	// them were heap-only: no index entry written.
	updates, hotUpdates float64
	// CPU seconds used so far by the token server, PostgreSQL (all its processes,
	// those ended included) and this load generator.
	server, postgres, bench float64
	// pgKinds splits postgres by kind of process (see pgProcessKind).
	pgKinds map[string]float64
}

// cpu says who spent the machine's CPU during a phase, per request.
func (c dbCounters) cpu(before dbCounters, n float64) string {
	per := func(a, b float64) float64 { return (a - b) / n * 1e6 }
	var kinds []string
	for k, v := range c.pgKinds {
		if d := per(v, before.pgKinds[k]); d >= 0.5 {
			kinds = append(kinds, fmt.Sprintf("%s %.0f", k, d))
		}
	}
	slices.Sort(kinds)
	return fmt.Sprintf("CPU µs per request: server %.0f, PostgreSQL %.0f (%s), load generator %.0f",
		per(c.server, before.server), per(c.postgres, before.postgres), strings.Join(kinds, ", "), per(c.bench, before.bench))
}

// The processes readCounters measures.
var serverPID, postmasterPID int

// userHZ is Linux's USER_HZ, the unit of a process's children's times in
// /proc/<pid>/stat (procfs converts only the process's own).
const userHZ = 100

// cpuSeconds is the CPU time a process used; with children, that of the children it
// has waited for (PostgreSQL's ended backends) too.
func cpuSeconds(pid int, children bool) float64 {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0
	}
	st, err := p.Stat()
	if err != nil {
		return 0
	}
	sum := st.CPUTime()
	if children {
		sum += float64(st.CUTime+st.CSTime) / userHZ
	}
	return sum
}

// familyCPU is the CPU time of a process and its children, the ended ones included,
// in total and by kind of child (pgProcessKind); the ended children's and the
// process's own count as "ended or postmaster".
func familyCPU(pid int) (float64, map[string]float64) {
	total := cpuSeconds(pid, true)
	kinds := map[string]float64{"ended or postmaster": total}
	all, _ := procfs.AllProcs()
	for _, p := range all {
		st, err := p.Stat()
		if err != nil || st.PPID != pid {
			continue
		}
		total += st.CPUTime()
		kinds[pgProcessKind(p)] += st.CPUTime()
	}
	return total, kinds
}

// pgProcessKind names a PostgreSQL process by its title: "backends" for the
// connections' processes ("postgres: user db [local] idle"), else the title's kind
// ("walwriter", "autovacuum worker", "checkpointer", …).
func pgProcessKind(p procfs.Proc) string {
	cmd, _ := p.CmdLine()
	t := strings.TrimSpace(strings.TrimPrefix(strings.Join(cmd, " "), "postgres: "))
	if strings.Contains(t, "[local]") || strings.Contains(t, "127.0.0.1") {
		return "backends"
	}
	return t
}

func readCounters(db *sql.DB) dbCounters {
	var c dbCounters
	// A backend publishes its counts at most once a second, and within a second of
	// going idle.
	time.Sleep(1100 * time.Millisecond)
	// The statistics a backend collects reach the shared view when its transaction
	// ends; pg_stat_clear_snapshot makes this session read them afresh.
	_, _ = db.Exec(`SELECT pg_stat_clear_snapshot()`)
	_ = db.QueryRow(`SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),
    (SELECT wal_sync FROM pg_stat_wal),
    coalesce((SELECT n_tup_upd FROM pg_stat_user_tables WHERE relname = 'tokens'), 0),
    coalesce((SELECT n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'tokens'), 0)`).
		Scan(&c.commits, &c.walSyncs, &c.updates, &c.hotUpdates)
	c.postgres, c.pgKinds = familyCPU(postmasterPID)
	c.server, c.bench = cpuSeconds(serverPID, false), cpuSeconds(os.Getpid(), false)
	return c
}

// ceilingResult is what pgbench measured.
type ceilingResult struct{ rate, meanMS, cpuUS float64 }

// insertCeiling runs pgbench on the server's socket: each client commits one
// single-row INSERT per transaction into a table shaped like a slim tokens row (a
// primary key of a random signature, a second indexed column, and a payload as long
// as an average stored access token), at the bench's concurrency for one phase.
func insertCeiling(ctx context.Context, db *sql.DB, pg *testpg.Server) (ceilingResult, error) {
	var rowBytes int
	if err := db.QueryRowContext(ctx, `SELECT coalesce(avg(pg_column_size(t.*))::int, 300) FROM tokens t WHERE kind = 'access_token'`).
		Scan(&rowBytes); err != nil {
		return ceilingResult{}, err
	}
	if _, err := db.ExecContext(ctx, `CREATE TABLE bench_ceiling (signature text PRIMARY KEY, request_id text NOT NULL, payload text NOT NULL);
CREATE INDEX ON bench_ceiling (request_id)`); err != nil {
		return ceilingResult{}, err
	}
	script, err := os.CreateTemp("", "kubeoauth-pgbench-*.sql")
	if err != nil {
		return ceilingResult{}, err
	}
	defer func() { _ = os.Remove(script.Name()) }()
	// Two md5s are a 64-character signature, as the token's is; the payload makes up
	// the rest of the row.
	payload := max(rowBytes-2*65-24, 16)
	_, _ = fmt.Fprintf(script, "INSERT INTO bench_ceiling (signature, request_id, payload) VALUES "+
		"(md5(random()::text) || md5(random()::text), md5(random()::text), repeat('x', %d));\n", payload)
	if err := script.Close(); err != nil {
		return ceilingResult{}, err
	}
	bin, err := testpg.BinDir()
	if err != nil {
		return ceilingResult{}, err
	}
	var dbName string
	if err := db.QueryRowContext(ctx, `SELECT current_database()`).Scan(&dbName); err != nil {
		return ceilingResult{}, err
	}
	before := readCounters(db)
	// #nosec G204 -- the server's own tool
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "pgbench"), "-h", pg.SocketDir(), "-U", "postgres",
		"-n", "-c", strconv.Itoa(*concurrency), "-j", "2", "-T", strconv.Itoa(int(duration.Seconds())),
		"-f", script.Name(), dbName)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return ceilingResult{}, fmt.Errorf("pgbench: %w\n%s", err, out)
	}
	after := readCounters(db)
	var r ceilingResult
	if m := regexp.MustCompile(`tps = ([0-9.]+) \(without initial connection time\)`).FindSubmatch(out); m != nil {
		r.rate, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	if m := regexp.MustCompile(`latency average = ([0-9.]+) ms`).FindSubmatch(out); m != nil {
		r.meanMS, _ = strconv.ParseFloat(string(m[1]), 64)
	}
	if r.rate == 0 {
		return r, fmt.Errorf("pgbench: no tps in its output:\n%s", out)
	}
	n := r.rate * duration.Seconds()
	fmt.Printf("%-26s %8.0f/s  mean   %6.2fms               (%d-byte rows; %.2f commits, %.3f WAL flushes per insert)\n",
		"INSERT ceiling (pgbench)", r.rate, r.meanMS, rowBytes, (after.commits-before.commits)/n, (after.walSyncs-before.walSyncs)/n)
	r.cpuUS = (after.postgres - before.postgres + (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()) / n * 1e6
	fmt.Printf("  CPU µs per insert: PostgreSQL %.0f, pgbench %.0f\n", (after.postgres-before.postgres)/n*1e6,
		(cmd.ProcessState.UserTime()+cmd.ProcessState.SystemTime()).Seconds()/n*1e6)
	printStatements(db, n)
	return r, nil
}

// phase runs each worker's request in a loop for the duration and reports.
func phase(db *sql.DB, name string, worker func(w int) func() error) result {
	var (
		mu        sync.Mutex
		latencies []time.Duration
		errs      int
		firstErr  error
	)
	before := readCounters(db)
	deadline := time.Now().Add(*duration)
	var wg sync.WaitGroup
	begin := time.Now()
	for w := range *concurrency {
		do := worker(w)
		wg.Go(func() {
			var mine []time.Duration
			for time.Now().Before(deadline) {
				t := time.Now()
				err := do()
				if err != nil {
					mu.Lock()
					errs++
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					continue
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(begin)
	after := readCounters(db)
	slices.Sort(latencies)
	pct := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[int(float64(len(latencies)-1)*p)]
	}
	n := float64(max(len(latencies), 1))
	r := result{name: name, rate: float64(len(latencies)) / elapsed.Seconds(), p50: pct(0.50), p99: pct(0.99),
		cpuUS: (after.server - before.server + after.postgres - before.postgres + after.bench - before.bench) / n * 1e6}
	fmt.Printf("%-26s %8.0f/s  p50 %6.2fms  p99 %6.2fms  (%d ok, %d errors; %.2f commits, %.3f WAL flushes per request)\n",
		name, r.rate, ms(r.p50), ms(r.p99), len(latencies), errs, (after.commits-before.commits)/n, (after.walSyncs-before.walSyncs)/n)
	fmt.Printf("  %s\n", after.cpu(before, n))
	if upd := after.updates - before.updates; upd > 0 {
		fmt.Printf("  tokens rows updated: %.2f per request, %.0f%% heap-only (no index entries)\n",
			upd/n, 100*(after.hotUpdates-before.hotUpdates)/upd)
	}
	printStatements(db, n)
	if firstErr != nil {
		fmt.Printf("  first error: %v\n", firstErr)
	}
	return r
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// refreshTokenByCodeFlow signs alice in and runs the code flow for scope (consent is
// pre-approved by a declared grant) to get a refresh token.
func refreshTokenByCodeFlow(issuer, secret, scope string) (string, error) {
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if strings.HasPrefix(req.URL.String(), redirectURI) {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	verifier := randsecret.MustNew(48)
	authURL := issuer + "/oauth2/auth?" + url.Values{"client_id": {"bench"}, "response_type": {"code"},
		"scope": {scope}, "state": {randsecret.MustNew(32)}, "redirect_uri": {redirectURI},
		"code_challenge": {oauth2S256(verifier)}, "code_challenge_method": {"S256"}}.Encode()
	resp, err := hc.Get(authURL)
	if err != nil {
		return "", err
	}
	page, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	csrf := strings.SplitN(strings.SplitN(string(page), `name="csrf" value="`, 2)[1], `"`, 2)[0]
	resp, err = hc.PostForm(issuer+"/login", url.Values{"csrf": {csrf}, "username": {"alice"}, "password": {"alice"},
		"return_to": {strings.TrimPrefix(authURL, issuer)}})
	if err != nil {
		return "", err
	}
	_ = resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		return "", fmt.Errorf("code flow: no redirect to the app (%d)", resp.StatusCode)
	}
	req, _ := http.NewRequest(http.MethodPost, issuer+"/oauth2/token", strings.NewReader(url.Values{
		"grant_type": {"authorization_code"}, "code": {loc.Query().Get("code")}, "redirect_uri": {redirectURI},
		"code_verifier": {verifier}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("bench", secret)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer func() { _ = resp.Body.Close() }()
	var out struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.RefreshToken == "" {
		return "", errors.New("code flow: no refresh token")
	}
	return out.RefreshToken, nil
}

func cpuModel() string {
	data, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "model name") {
			return strings.TrimSpace(strings.SplitN(line, ":", 2)[1])
		}
	}
	return runtime.GOARCH
}

// oauth2S256 is the PKCE S256 challenge of verifier.
func oauth2S256(verifier string) string { return oauth2.S256ChallengeFromVerifier(verifier) }

// saveProfile fetches the server's CPU profile over d.
func saveProfile(path string, d time.Duration) error {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:6060/debug/pprof/profile?seconds=%d", int(d.Seconds())-1))
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}
