package verify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/randsecret"
)

// Config says what to verify and how to reach it.
type Config struct {
	// Server is the public base URL of the new color (green), reached through its
	// own Service, such as http://auth-green.platform.svc:4444.
	Server string
	// Peer is the public base URL of the serving color (blue).
	Peer string
	// Admin registers and deletes the temporary client and, without Login, gets
	// the authorization code of the refresh checks (POST /admin/verify/authorize).
	// Both colors share the database, so either color's admin API will do for the
	// client; the code needs a version with that endpoint, which green is.
	Admin *adminapi.HTTPClient
	// Issuer, when set, must be the issuer both colors' discovery documents name.
	Issuer string
	// Login, when set, signs in on Server's login page as a user, for the
	// authorization code of the refresh checks; nil gets the code from the admin
	// API instead, for the fixed subject adminapi.VerifySubject. Either way the code
	// is exchanged at Server's token endpoint with a PKCE verifier.
	Login *Login
	// Propagation is how long a revocation may take to reach every pod of both
	// colors; default two seconds, well under the five seconds for which a pod
	// trusts a cached token without the notification that ends it, so only that
	// notification can make a check pass.
	Propagation time.Duration
	// HTTP reaches the public endpoints; default a client with a 15-second timeout.
	HTTP *http.Client
	// Out gets one line per check.
	Out io.Writer
}

// Login is a user's credentials, for the sign-in page.
type Login struct {
	Username, Password string
}

// Check is one verification step and how it went.
type Check struct {
	Name string
	// Err says why it failed; nil when it passed.
	Err error
}

// Report is every check, in the order they ran.
type Report struct {
	Checks []Check
}

// Failed lists the checks that failed.
func (r *Report) Failed() []Check {
	var out []Check
	for _, c := range r.Checks {
		if c.Err != nil {
			out = append(out, c)
		}
	}
	return out
}

// maxSummary is what the kubelet keeps of a termination message.
const maxSummary = 4096

// Summary is one paragraph for the termination message, which the operator puts in
// the rollback reason: the first failure in full, then the names of the others.
func (r *Report) Summary() string {
	failed := r.Failed()
	var s string
	if len(failed) == 0 {
		s = fmt.Sprintf("verification passed: %d checks", len(r.Checks))
	} else {
		s = fmt.Sprintf("verification failed: %s: %v", failed[0].Name, failed[0].Err)
		if len(failed) > 1 {
			names := make([]string, 0, len(failed)-1)
			for _, c := range failed[1:] {
				names = append(names, c.Name)
			}
			s += fmt.Sprintf("; %d more failed: %s", len(failed)-1, strings.Join(names, "; "))
		}
	}
	if len(s) > maxSummary {
		s = strings.ToValidUTF8(s[:maxSummary-len("…")], "") + "…"
	}
	return s
}

// Client IDs of temporary clients start with ClientIDPrefix; the rest is random.
// The admin API gives authorization codes to such clients only.
const ClientIDPrefix = adminapi.VerifyClientIDPrefix

// redirectURI is where the authorization code is sent: never followed (the code is
// read from the redirect), and under .invalid (RFC 2606) so that it cannot be.
const redirectURI = "https://kubeoauth-verify.invalid/callback"

// Run registers a temporary client, runs every check, deletes the client (also
// after a failure, and after ctx ended), and returns the report; the error, when
// not nil, is the report's summary.
//
// The client is registered without an owner namespace, as an administrator's: the
// operator's owner sweep leaves such clients alone, so it is not deleted under the
// checks' feet, and nothing else registers one with this ID prefix.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Propagation <= 0 {
		cfg.Propagation = 2 * time.Second
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 15 * time.Second}
	}
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	v := &verifier{cfg: cfg, http: cfg.HTTP, green: strings.TrimSuffix(cfg.Server, "/"), blue: strings.TrimSuffix(cfg.Peer, "/")}
	v.clientID = ClientIDPrefix + randomHex(8)
	v.secret = randsecret.MustNew(32)
	v.run(ctx)
	s := v.report.Summary()
	_, _ = fmt.Fprintln(v.cfg.Out, s)
	if len(v.report.Failed()) > 0 {
		return &v.report, errors.New(s)
	}
	return &v.report, nil
}

func (v *verifier) run(ctx context.Context) {
	registered := v.check("register a temporary client "+v.clientID+" through the admin API", func() error { return v.register(ctx) })
	// The deletion gets time of its own: a verification that ran out of time must
	// still not leave a client behind. A registration that failed may still have
	// been stored (an answer lost on the way back): it is deleted too, quietly.
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		defer cancel()
		if !registered {
			_ = v.cfg.Admin.DeleteClient(dctx, v.clientID, "")
			return
		}
		v.check("delete the temporary client", func() error { return v.cfg.Admin.DeleteClient(dctx, v.clientID, "") })
	}()
	if !registered {
		return
	}
	v.discovery(ctx)
	v.greenToken(ctx)
	v.blueToken(ctx)
	v.refreshChain(ctx)
}

type verifier struct {
	cfg              Config
	http             *http.Client
	green, blue      string
	clientID, secret string
	report           Report
}

// check runs one step, prints its line and records it; it says whether it passed.
func (v *verifier) check(name string, f func() error) bool {
	err := f()
	v.report.Checks = append(v.report.Checks, Check{Name: name, Err: err})
	if err != nil {
		_, _ = fmt.Fprintf(v.cfg.Out, "FAIL  %s: %v\n", name, err)
		return false
	}
	_, _ = fmt.Fprintf(v.cfg.Out, "ok    %s\n", name)
	return true
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// register puts the temporary client: client_credentials, and the authorization
// code with refresh tokens, skipping consent (nothing asks anyone, and the approval
// is recorded as first-party, not mirrored as a ConsentGrant; the admin API's
// verification codes need it). Short lifespans bound what a client left behind by
// a killed Job could still be used for.
func (v *verifier) register(ctx context.Context) error {
	c := &adminapi.Client{ID: v.clientID, Secret: v.secret, ClientMetadata: adminapi.ClientMetadata{
		Name:                    "kubeoauth upgrade verification",
		GrantTypes:              []string{"client_credentials", "authorization_code", "refresh_token"},
		RedirectURIs:            []string{redirectURI},
		Scopes:                  []string{"offline_access"},
		SkipConsent:             true,
		TokenEndpointAuthMethod: adminapi.AuthClientSecretBasic,
		TokenLifespans:          map[string]string{"accessToken": "10m", "refreshToken": "15m", "authorizationCode": "1m"},
	}}
	_, err := v.cfg.Admin.PutClient(ctx, c)
	return err
}

// discovery checks that both colors name the issuer clients expect.
func (v *verifier) discovery(ctx context.Context) {
	if v.cfg.Issuer == "" {
		return
	}
	want := strings.TrimSuffix(v.cfg.Issuer, "/")
	for _, s := range []struct{ color, base string }{{"green", v.green}, {"blue", v.blue}} {
		v.check(s.color+"'s discovery document names the issuer "+want, func() error {
			var doc struct {
				Issuer string `json:"issuer"`
			}
			if err := v.getJSON(ctx, s.base+"/.well-known/openid-configuration", &doc); err != nil {
				return err
			}
			if doc.Issuer != want {
				return fmt.Errorf("it names %q", printable(doc.Issuer, 200))
			}
			return nil
		})
	}
}

// greenToken: a token green issued works on both colors, and green's revocation
// ends it on both.
func (v *verifier) greenToken(ctx context.Context) {
	var tok string
	if !v.check("green issues a client_credentials token", func() error {
		var err error
		tok, err = v.clientCredentials(ctx, v.green)
		return err
	}) {
		return
	}
	if !v.check("green introspects green's token as active", func() error {
		return v.active(ctx, v.green, tok)
	}) {
		return
	}
	if !v.check("blue introspects green's token as active", func() error {
		return v.active(ctx, v.blue, tok)
	}) {
		return
	}
	if !v.check("green revokes green's token", func() error {
		return v.revoke(ctx, v.green, tok)
	}) {
		return
	}
	v.check("green sees green's revocation", func() error { return v.inactive(ctx, v.green, tok) })
	v.check("blue sees green's revocation", func() error { return v.inactive(ctx, v.blue, tok) })
}

// blueToken: a token blue issued works on green, and blue's revocation ends it
// there: what a rollback, or a client that moves between colors, relies on.
func (v *verifier) blueToken(ctx context.Context) {
	var tok string
	if !v.check("blue issues a client_credentials token", func() error {
		var err error
		tok, err = v.clientCredentials(ctx, v.blue)
		return err
	}) {
		return
	}
	if !v.check("green introspects blue's token as active", func() error {
		return v.active(ctx, v.green, tok)
	}) {
		return
	}
	if !v.check("blue revokes blue's token", func() error {
		return v.revoke(ctx, v.blue, tok)
	}) {
		return
	}
	v.check("green sees blue's revocation", func() error { return v.inactive(ctx, v.green, tok) })
}

// refreshChain: a refresh token issued by green refreshes on green and on blue, one
// rotated by blue refreshes on green, and green's revocation of the chain ends it on
// both colors. The chain starts with an authorization code exchanged at green: from
// green's sign-in page with a login, else from the admin API.
func (v *verifier) refreshChain(ctx context.Context) {
	greenCfg, blueCfg := v.oauthConfig(v.green), v.oauthConfig(v.blue)
	name, start := "get an authorization code from the admin API and exchange it at green for a refresh token (PKCE)", v.adminCode
	if v.cfg.Login != nil {
		name, start = "sign in on green and get a refresh token (authorization code with PKCE)", v.authorizationCode
	}
	var tok *oauth2.Token
	if !v.check(name, func() error {
		var err error
		tok, err = start(ctx, greenCfg)
		return err
	}) {
		return
	}
	for _, step := range []struct {
		name string
		cfg  *oauth2.Config
	}{
		{"green refreshes green's refresh token", greenCfg},
		{"blue refreshes the refresh token green rotated", blueCfg},
		{"green refreshes the refresh token blue rotated", greenCfg},
	} {
		if !v.check(step.name, func() error {
			next, err := v.refresh(ctx, step.cfg, tok.RefreshToken)
			if err == nil {
				tok = next
			}
			return err
		}) {
			return
		}
	}
	if !v.check("blue introspects the refreshed access token as active", func() error {
		return v.active(ctx, v.blue, tok.AccessToken)
	}) {
		return
	}
	if !v.check("green revokes the refresh token", func() error {
		return v.revoke(ctx, v.green, tok.RefreshToken)
	}) {
		return
	}
	for _, s := range []struct{ color, base string }{{"green", v.green}, {"blue", v.blue}} {
		v.check(s.color+" sees the refresh chain revoked (its access and refresh token)", func() error {
			if err := v.inactive(ctx, s.base, tok.AccessToken); err != nil {
				return fmt.Errorf("access token: %w", err)
			}
			if err := v.inactive(ctx, s.base, tok.RefreshToken); err != nil {
				return fmt.Errorf("refresh token: %w", err)
			}
			return nil
		})
	}
}

func (v *verifier) oauthConfig(base string) *oauth2.Config {
	return &oauth2.Config{ClientID: v.clientID, ClientSecret: v.secret, RedirectURL: redirectURI, Scopes: []string{"offline_access"},
		Endpoint: oauth2.Endpoint{AuthURL: base + "/oauth2/auth", TokenURL: base + "/oauth2/token", AuthStyle: oauth2.AuthStyleInHeader}}
}

func (v *verifier) clientCredentials(ctx context.Context, base string) (string, error) {
	cc := clientcredentials.Config{ClientID: v.clientID, ClientSecret: v.secret, TokenURL: base + "/oauth2/token",
		AuthStyle: oauth2.AuthStyleInHeader}
	tok, err := cc.Token(context.WithValue(ctx, oauth2.HTTPClient, v.http))
	if err != nil {
		return "", oauthErr(err)
	}
	if tok.AccessToken == "" {
		return "", errors.New("the answer has no access token")
	}
	return tok.AccessToken, nil
}

// refresh exchanges a refresh token; the server must rotate it.
func (v *verifier) refresh(ctx context.Context, cfg *oauth2.Config, rt string) (*oauth2.Token, error) {
	tok, err := cfg.TokenSource(context.WithValue(ctx, oauth2.HTTPClient, v.http), &oauth2.Token{RefreshToken: rt}).Token()
	if err != nil {
		return nil, oauthErr(err)
	}
	switch {
	case tok.AccessToken == "":
		return nil, errors.New("the answer has no access token")
	case tok.RefreshToken == "" || tok.RefreshToken == rt:
		return nil, errors.New("the answer has no new refresh token")
	}
	return tok, nil
}

// oauthErr shortens x/oauth2's error, which carries the whole response body.
func oauthErr(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		return fmt.Errorf("token endpoint: %s", describe(re.Response.StatusCode, re.Body))
	}
	return err
}

// authorizationCode signs in on base's login page as a browser would, with the
// cookies of the sign-in, and exchanges the code for tokens.
func (v *verifier) authorizationCode(ctx context.Context, cfg *oauth2.Config) (*oauth2.Token, error) {
	hc := &http.Client{Transport: v.http.Transport, Timeout: v.http.Timeout, Jar: &plainJar{},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if strings.HasPrefix(req.URL.String(), redirectURI) || len(via) >= 10 {
				return http.ErrUseLastResponse
			}
			return nil
		}}
	verifier, state := oauth2.GenerateVerifier(), randomHex(16)
	page, _, err := v.browse(ctx, hc, http.MethodGet, cfg.AuthCodeURL(state, oauth2.S256ChallengeOption(verifier)), nil)
	if err != nil {
		return nil, err
	}
	if !strings.Contains(page, `action="/login"`) {
		return nil, fmt.Errorf("the authorization request did not show the sign-in page: %s", pageMessage(page))
	}
	form := hiddenFields(page)
	form.Set("username", v.cfg.Login.Username)
	form.Set("password", v.cfg.Login.Password)
	base := strings.TrimSuffix(cfg.Endpoint.AuthURL, "/oauth2/auth")
	page, loc, err := v.browse(ctx, hc, http.MethodPost, base+"/login", form)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(loc, redirectURI) {
		return nil, fmt.Errorf("signing in as %q did not lead back to the client: %s", v.cfg.Login.Username, pageMessage(page))
	}
	cb, err := url.Parse(loc)
	if err != nil {
		return nil, err
	}
	q := cb.Query()
	switch {
	case q.Get("error") != "":
		return nil, fmt.Errorf("the authorization was refused: %s (%s)", printable(q.Get("error"), 100),
			printable(q.Get("error_description"), 300))
	case q.Get("state") != state || q.Get("code") == "":
		return nil, errors.New("the redirect back to the client has no code or the wrong state")
	}
	return v.exchange(ctx, cfg, q.Get("code"), verifier)
}

// adminCode has the admin API approve an authorization request for the fixed
// verification subject, and exchanges the code at cfg's token endpoint: the token
// endpoint's code exchange is the same as after a sign-in, without a user.
func (v *verifier) adminCode(ctx context.Context, cfg *oauth2.Config) (*oauth2.Token, error) {
	verifier, state := oauth2.GenerateVerifier(), randomHex(16)
	got, err := v.cfg.Admin.VerifyAuthorize(ctx, &adminapi.VerifyAuthorizeRequest{ClientID: v.clientID, RedirectURI: redirectURI,
		Scope: strings.Join(cfg.Scopes, " "), State: state, CodeChallenge: oauth2.S256ChallengeFromVerifier(verifier),
		CodeChallengeMethod: "S256"})
	switch {
	case errors.Is(err, adminapi.ErrNotFound):
		return nil, fmt.Errorf("the admin API at %s has no POST /admin/verify/authorize (a version before it): "+
			"point --admin-url at green's admin API, or give --login-file", v.cfg.Admin.BaseURL)
	case err != nil:
		return nil, fmt.Errorf("admin API: %w", err)
	case got.State != state || got.Code == "":
		return nil, errors.New("the admin API answered no code or another state")
	}
	return v.exchange(ctx, cfg, got.Code, verifier)
}

// exchange trades a code for tokens, which must include a refresh token.
func (v *verifier) exchange(ctx context.Context, cfg *oauth2.Config, code, pkceVerifier string) (*oauth2.Token, error) {
	tok, err := cfg.Exchange(context.WithValue(ctx, oauth2.HTTPClient, v.http), code, oauth2.VerifierOption(pkceVerifier))
	if err != nil {
		return nil, oauthErr(err)
	}
	if tok.RefreshToken == "" {
		return nil, errors.New("the code was exchanged for tokens without a refresh token")
	}
	return tok, nil
}

// browse sends a page request and returns the page and where it redirects to.
func (v *verifier) browse(ctx context.Context, hc *http.Client, method, u string, form url.Values) (page, location string, err error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return "", "", err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", "", err
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", "", err
	}
	return string(data), resp.Header.Get("Location"), nil
}

// introspection is the part of an RFC 7662 answer that is checked.
type introspection struct {
	Active   bool   `json:"active"`
	ClientID string `json:"client_id"`
}

func (v *verifier) introspect(ctx context.Context, base, token string) (introspection, error) {
	var out introspection
	err := v.post(ctx, base+"/oauth2/introspect", url.Values{"token": {token}}, &out)
	return out, err
}

// active checks that base says the token is live and the temporary client's.
func (v *verifier) active(ctx context.Context, base, token string) error {
	in, err := v.introspect(ctx, base, token)
	switch {
	case err != nil:
		return err
	case !in.Active:
		return errors.New("the token is inactive there")
	case in.ClientID != v.clientID:
		return fmt.Errorf("the token is active but of client %q", printable(in.ClientID, 100))
	}
	return nil
}

// inactive checks that base says the token is no longer live, within Propagation:
// behind a color's Service there are several pods, and the one asked may hear of
// the revocation a moment after the one that made it.
func (v *verifier) inactive(ctx context.Context, base, token string) error {
	deadline := time.Now().Add(v.cfg.Propagation)
	for {
		in, err := v.introspect(ctx, base, token)
		if err == nil && !in.Active {
			return nil
		}
		if time.Now().After(deadline) {
			if err != nil {
				return err
			}
			return fmt.Errorf("the token is still active there %s after its revocation", v.cfg.Propagation)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (v *verifier) revoke(ctx context.Context, base, token string) error {
	return v.post(ctx, base+"/oauth2/revoke", url.Values{"token": {token}}, nil)
}
