// Command bench-tokenserver measures the token server (`make bench-tokenserver`): it
// builds cmd/tokenserver, runs it as its own process on a throwaway PostgreSQL, and
// drives it from this process at a fixed concurrency over keep-alive connections:
// client_credentials tokens, introspections, and refreshes (each worker following its
// own rotating chain). It prints requests per second, p50/p99 latency and the server's
// peak RSS. docs/benchmarks.md records the figures.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/signingkey"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
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
	cpuProfile  = flag.String("cpuprofile", "", "write the server's CPU profile of the token phase to this file")
)

const redirectURI = "http://127.0.0.1:5555/callback"

func random() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String(), nil
}

func run() error {
	flag.Parse()
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "kubeoauth-bench-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	bin := filepath.Join(dir, "tokenserver")
	fmt.Println("==> building cmd/tokenserver")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/tokenserver").CombinedOutput(); err != nil { // #nosec G204
		return fmt.Errorf("go build: %w\n%s", err, out)
	}
	fmt.Println("==> starting a throwaway PostgreSQL")
	pg, err := testpg.Start()
	if err != nil {
		return err
	}
	defer func() { _ = pg.Stop() }()
	db, err := postgres.OpenDB(pg.DSN, 2)
	if err != nil {
		return err
	}
	if _, err := postgres.Migrate(ctx, db, postgres.Migrations(), postgres.MigrateOptions{}); err != nil {
		return err
	}
	_ = db.Close()

	key, _ := signingkey.Generate(signingkey.ES256)
	hash, _ := bcrypt.GenerateFromPassword([]byte("alice"), bcrypt.MinCost)
	adminToken := random()
	for name, data := range map[string]string{"key.pem": string(key), "hmac": random(), "admin": adminToken,
		"users": "alice:" + string(hash) + "\n"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
			return err
		}
	}
	pub, err := freePort()
	if err != nil {
		return err
	}
	adm, err := freePort()
	if err != nil {
		return err
	}
	issuer := "http://" + pub
	srv := exec.Command(bin, "serve", "--dsn", pg.DSN, "--issuer", issuer, "--listen", pub, "--admin-listen", adm, // #nosec G204
		"--metrics-listen=", "--admin-token-file", filepath.Join(dir, "admin"), "--signing-key-file", filepath.Join(dir, "key.pem"),
		"--hmac-secret-file", filepath.Join(dir, "hmac"), "--users-file", filepath.Join(dir, "users"),
		"--refresh-grace-period", "30s", "--log-level", "warn", "--pprof-listen", "127.0.0.1:6060")
	srv.Stdout, srv.Stderr = os.Stderr, os.Stderr
	if err := srv.Start(); err != nil {
		return err
	}
	defer func() { _ = srv.Process.Kill(); _, _ = srv.Process.Wait() }()

	admin := &adminapi.HTTPClient{BaseURL: "http://" + adm, Token: adminToken}
	secret := random()
	client := &adminapi.Client{ID: "bench", Secret: secret, OwnerNamespace: "bench", ClientMetadata: adminapi.ClientMetadata{
		Name: "Bench", GrantTypes: []string{"client_credentials", "authorization_code", "refresh_token"},
		RedirectURIs: []string{redirectURI}, Scopes: []string{"openid", "offline_access", "zones.read"},
		TokenEndpointAuthMethod: "client_secret_basic"}}
	for i := 0; ; i++ {
		if _, err = admin.PutClient(ctx, client); err == nil {
			break
		}
		if i > 100 {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
	grant := &adminapi.Grant{ClientID: "bench", Subject: "alice", Scopes: []string{"openid", "offline_access"}}
	if _, err := admin.PutGrant(ctx, grant); err != nil {
		return err
	}

	hc := &http.Client{Transport: &http.Transport{MaxIdleConns: *concurrency * 2, MaxIdleConnsPerHost: *concurrency * 2},
		Timeout: 10 * time.Second}
	tokenForm := url.Values{"grant_type": {"client_credentials"}, "scope": {"zones.read"}}.Encode()
	post := func(path, form string) (map[string]any, error) {
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
		out := map[string]any{}
		return out, json.Unmarshal(body, &out)
	}
	tok, err := post("/oauth2/token", tokenForm)
	if err != nil {
		return err
	}
	introspectForm := url.Values{"token": {tok["access_token"].(string)}}.Encode()

	fmt.Printf("==> %d workers, %s per phase, GOMAXPROCS %d, %s\n", *concurrency, *duration, runtime.GOMAXPROCS(0), cpuModel())
	profiled := make(chan error, 1)
	if *cpuProfile != "" {
		go func() { profiled <- saveProfile(*cpuProfile, *duration) }()
	} else {
		profiled <- nil
	}
	phase("client_credentials tokens", func(int) func() error {
		return func() error { _, err := post("/oauth2/token", tokenForm); return err }
	})
	if err := <-profiled; err != nil {
		return err
	}
	phase("introspections", func(int) func() error {
		return func() error { _, err := post("/oauth2/introspect", introspectForm); return err }
	})
	chains := make([]string, *concurrency)
	for i := range chains {
		if chains[i], err = refreshTokenByCodeFlow(issuer, secret); err != nil {
			return err
		}
	}
	phase("refreshes", func(w int) func() error {
		return func() error {
			out, err := post("/oauth2/token", url.Values{"grant_type": {"refresh_token"}, "refresh_token": {chains[w]}}.Encode())
			if err == nil {
				chains[w] = out["refresh_token"].(string)
			}
			return err
		}
	})
	fmt.Printf("server peak RSS: %s\n", peakRSS(srv.Process.Pid))
	return nil
}

// phase runs each worker's request in a loop for the duration and reports.
func phase(name string, worker func(w int) func() error) {
	var (
		mu        sync.Mutex
		latencies []time.Duration
		errs      int
		firstErr  error
	)
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
	slices.Sort(latencies)
	pct := func(p float64) time.Duration {
		if len(latencies) == 0 {
			return 0
		}
		return latencies[int(float64(len(latencies)-1)*p)]
	}
	fmt.Printf("%-26s %8.0f/s  p50 %6.2fms  p99 %6.2fms  (%d ok, %d errors)\n", name,
		float64(len(latencies))/elapsed.Seconds(), ms(pct(0.50)), ms(pct(0.99)), len(latencies), errs)
	if firstErr != nil {
		fmt.Printf("  first error: %v\n", firstErr)
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// refreshTokenByCodeFlow signs alice in and runs the code flow (consent is
// pre-approved by a declared grant) to get a refresh token.
func refreshTokenByCodeFlow(issuer, secret string) (string, error) {
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, _ []*http.Request) error {
		if strings.HasPrefix(req.URL.String(), redirectURI) {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	verifier := random() + random()
	authURL := issuer + "/oauth2/auth?" + url.Values{"client_id": {"bench"}, "response_type": {"code"},
		"scope": {"openid offline_access"}, "state": {random()}, "redirect_uri": {redirectURI},
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

func peakRSS(pid int) string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:"))
		}
	}
	return "unknown"
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
