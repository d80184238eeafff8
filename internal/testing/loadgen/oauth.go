package loadgen

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/kubeoauth/kubeoauth/internal/randsecret"
)

// expectation says whether an answer is the one the ledger expects, and if not,
// a short description of it.
type expectation func(status int, header http.Header, body []byte) (bool, string)

func expectStatus(codes ...int) expectation {
	return func(status int, _ http.Header, body []byte) (bool, string) {
		for _, c := range codes {
			if status == c {
				return true, ""
			}
		}
		return false, describe(status, body)
	}
}

// describe is the OAuth error code of a body, else its first bytes; never the
// body of a success, which may hold tokens.
func describe(status int, body []byte) string {
	if status < 300 {
		return fmt.Sprintf("%d, a success", status)
	}
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		return fmt.Sprintf("%d %s", status, e.Error)
	}
	s := string(body)
	if len(s) > 80 {
		s = s[:80]
	}
	return fmt.Sprintf("%d %q", status, s)
}

// do sends req, records it in the ledger under kind and returns the answer; status
// is 0 after a transport error.
func (g *Generator) do(kind Kind, hc *http.Client, req *http.Request, expect expectation) (status int, body []byte) {
	r := Request{Kind: kind, Start: time.Now()}
	resp, err := hc.Do(req)
	if err == nil {
		body, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
		r.Status = resp.StatusCode
		r.Version = resp.Header.Get(VersionHeader)
	}
	r.End = time.Now()
	if err != nil {
		// A body cut off after the status line is a transport failure too.
		r.Status, r.Err = 0, err.Error()
		g.ledger.record(r)
		return 0, nil
	}
	r.Expected, r.Detail = expect(r.Status, resp.Header, body)
	g.ledger.record(r)
	return r.Status, body
}

// post sends a form to path on the next base URL, authenticated as the client.
func (g *Generator) post(ctx context.Context, kind Kind, hc *http.Client, path string, c Client, form url.Values,
	expect expectation) (int, []byte) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.nextURL()+path, strings.NewReader(form.Encode()))
	if err != nil {
		panic(err) // only a malformed URL, which New refused
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(c.ID), url.QueryEscape(c.Secret))
	return g.do(kind, hc, req, expect)
}

type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	RefreshToken string `json:"refresh_token"`
	ExpiresIn    int    `json:"expires_in"`
	Scope        string `json:"scope"`
}

// issue records the tokens of a token endpoint answer that started at start.
func (g *Generator) issue(body []byte, start time.Time, c Client, chain int, grant string, revocable bool) (at, rt *token, err error) {
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil || tr.AccessToken == "" {
		return nil, nil, fmt.Errorf("a token response without an access token: %.80s", body)
	}
	now := time.Now()
	// Counted from the request's start, so the ledger never expects a token to live
	// longer than it does.
	exp := start.Add(time.Duration(tr.ExpiresIn) * time.Second)
	at = &token{value: tr.AccessToken, client: c.ID, chain: chain, grant: grant, revocable: revocable,
		keep: !revocable && chain < 0 && grant == "", issuedAt: now, expiresAt: exp,
		openid: slices.Contains(strings.Fields(tr.Scope), "openid")}
	g.ledger.issued(at)
	if tr.RefreshToken != "" {
		rt = &token{value: tr.RefreshToken, refresh: true, client: c.ID, chain: chain, grant: grant, issuedAt: now,
			expiresAt: start.Add(g.cfg.RefreshTokenLifespan)}
		g.ledger.issued(rt)
	}
	return at, rt, nil
}

// introspect asks whether t is active; ok is false when the server gave no usable
// answer (already recorded as a failure).
func (g *Generator) introspect(ctx context.Context, kind Kind, t *token) (active, ok bool) {
	status, body := g.post(ctx, kind, g.pooled, "/oauth2/introspect", g.introspector(t), tokenForm(t), expectStatus(http.StatusOK))
	if status != http.StatusOK {
		return false, false
	}
	var ir struct {
		Active bool `json:"active"`
	}
	if err := json.Unmarshal(body, &ir); err != nil {
		return false, false
	}
	return ir.Active, true
}

// introspector is the client that introspects t: the Introspector, as a resource
// server would, for an access token; for a refresh token its own client, the only
// one the server shows it active to.
func (g *Generator) introspector(t *token) Client {
	if t.refresh {
		for _, c := range []Client{g.cfg.ChainClient, g.cfg.GrantClient, g.cfg.Machine} {
			if c.ID == t.client {
				return c
			}
		}
	}
	return g.cfg.Introspector
}

// userinfoRefused says whether /userinfo refuses the access token t (401), as it
// must once t is revoked; ok is false when the server gave no usable answer.
func (g *Generator) userinfoRefused(ctx context.Context, t *token) (refused, ok bool) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, g.nextURL()+"/userinfo", nil)
	if err != nil {
		panic(err)
	}
	req.Header.Set("Authorization", "Bearer "+t.value)
	status, _ := g.do(CheckUserinfo, g.pooled, req, expectStatus(http.StatusOK, http.StatusUnauthorized))
	switch status {
	case http.StatusUnauthorized:
		return true, true
	case http.StatusOK:
		return false, true
	}
	return false, false
}

// session is one user's signed-in browser: a cookie jar on the pooled transport
// that stops at the app's redirect URI.
type session struct {
	user User
	hc   *http.Client
	// noFollow shares the jar and stops at any redirect: the login form's answer
	// is the redirect itself.
	noFollow *http.Client
}

func (g *Generator) newSession(u User, redirectURI string) (*session, error) {
	jar, err := newJar()
	if err != nil {
		return nil, err
	}
	hc := &http.Client{Jar: jar, Transport: g.pooled.Transport, Timeout: g.cfg.Timeout,
		CheckRedirect: func(req *http.Request, _ []*http.Request) error {
			if strings.HasPrefix(req.URL.String(), redirectURI) {
				return http.ErrUseLastResponse
			}
			return nil
		}}
	noFollow := &http.Client{Jar: jar, Transport: g.pooled.Transport, Timeout: g.cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &session{user: u, hc: hc, noFollow: noFollow}, nil
}

// signIn signs the session's user in through the login form, as a browser would:
// an authorization request sends it to /login, whose form carries a CSRF token.
func (g *Generator) signIn(ctx context.Context, s *session, c Client) error {
	base := g.cfg.URLs[0]
	authURL := authorizeURL(base, c, randsecret.MustNew(48))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		return err
	}
	status, page := g.do(Login, s.hc, req, expectStatus(http.StatusOK))
	_, rest, found := strings.Cut(string(page), `name="csrf" value="`)
	if status != http.StatusOK || !found {
		return fmt.Errorf("sign-in of %s: no login form (%d)", s.user.Name, status)
	}
	csrf, _, _ := strings.Cut(rest, `"`)
	form := url.Values{"csrf": {csrf}, "username": {s.user.Name}, "password": {s.user.Password},
		"return_to": {strings.TrimPrefix(authURL, base)}}
	req, err = http.NewRequestWithContext(ctx, http.MethodPost, base+"/login", strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	status, _ = g.do(Login, s.noFollow, req, expectStatus(http.StatusFound, http.StatusSeeOther))
	if status != http.StatusFound && status != http.StatusSeeOther {
		return fmt.Errorf("sign-in of %s: %d", s.user.Name, status)
	}
	return nil
}

// codeFlow runs an authorization request with the session's cookie — no page, the
// user is signed in and consent is not asked — and exchanges the code.
func (g *Generator) codeFlow(ctx context.Context, s *session, c Client, chain int, grant string) (at, rt *token, err error) {
	verifier := randsecret.MustNew(48)
	base := g.nextURL()
	authURL := authorizeURL(base, c, verifier)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		return nil, nil, err
	}
	var code string
	status, body := g.do(Authorize, s.hc, req, func(status int, header http.Header, body []byte) (bool, string) {
		loc, err := url.Parse(header.Get("Location"))
		if status != http.StatusFound && status != http.StatusSeeOther || err != nil {
			return false, describe(status, body)
		}
		// A redirect to the app that carries an error (or to /login: the session
		// was lost) is as much a failure as an error page.
		if code = loc.Query().Get("code"); code == "" {
			return false, fmt.Sprintf("%d to %.120s", status, loc)
		}
		return true, ""
	})
	if code == "" {
		return nil, nil, fmt.Errorf("authorization for %s at %s: no code (%d %.80s)", s.user.Name, c.ID, status, body)
	}
	start := time.Now()
	status, body = g.post(ctx, CodeExchange, g.pooled, "/oauth2/token", c, url.Values{paramGrantType: {"authorization_code"},
		"code": {code}, paramRedirectURI: {c.RedirectURI}, "code_verifier": {verifier}}, expectStatus(http.StatusOK))
	if status != http.StatusOK {
		return nil, nil, fmt.Errorf("code exchange for %s at %s: %d", s.user.Name, c.ID, status)
	}
	at, rt, err = g.issue(body, start, c, chain, grant, false)
	if err == nil && rt == nil {
		err = errors.New("the code exchange gave no refresh token: the client's scope needs offline_access")
	}
	return at, rt, err
}

const (
	paramGrantType   = "grant_type"
	paramRedirectURI = "redirect_uri"
)

// authorizeURL is an authorization request of c with PKCE S256.
func authorizeURL(base string, c Client, verifier string) string {
	return base + "/oauth2/auth?" + url.Values{"client_id": {c.ID}, "response_type": {"code"},
		"scope": {c.Scope}, "state": {randsecret.MustNew(16)}, paramRedirectURI: {c.RedirectURI},
		"code_challenge": {oauth2.S256ChallengeFromVerifier(verifier)}, "code_challenge_method": {"S256"}}.Encode()
}

func tokenForm(t *token) url.Values { return url.Values{"token": {t.value}} }

func refreshForm(t *token) url.Values {
	return url.Values{paramGrantType: {"refresh_token"}, "refresh_token": {t.value}}
}
