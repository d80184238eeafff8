package tokenserver_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

func authTime(t *testing.T, idt *oidc.IDToken) time.Time {
	t.Helper()
	var c struct {
		AuthTime int64 `json:"auth_time"`
	}
	if err := idt.Claims(&c); err != nil || c.AuthTime == 0 {
		t.Fatalf("ID token without auth_time: %v", err)
	}
	return time.Unix(c.AuthTime, 0)
}

// prompt=login shows the login page to a signed-in user, and the ID token that
// follows carries the time of that new sign-in; after it the request goes on
// (no second login page).
func TestPromptLoginForcesASignIn(t *testing.T) {
	in := start(t, setup{})
	cfg := oauthConfig(in, logoutClient(t, in), "openid")
	b := newBrowser(t)
	signInToApp(t, in, b, cfg)

	login := oauth2.SetAuthURLParam("prompt", "login")
	_, page := b.get(cfg.AuthCodeURL("state-login-00001", login, oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	if !strings.Contains(page, `action="/login"`) {
		t.Fatalf("prompt=login with a session: %.300s; want the login page", page)
	}
	// The marker the login page adds cannot be made up to skip the sign-in.
	_, page = b.get(cfg.AuthCodeURL("state-login-00002", login, oauth2.S256ChallengeOption(oauth2.GenerateVerifier()),
		oauth2.SetAuthURLParam("kubeoauth_signed_in_for", "1.forged"), oauth2.SetAuthURLParam("kubeoauth_signed_in_after", "1.forged")))
	if !strings.Contains(page, `action="/login"`) {
		t.Fatalf("prompt=login with a forged sign-in marker: %.300s; want the login page", page)
	}
	// Nor can a real one, taken from the login page of another request (the
	// attacker's own, say), once the user signed in after it.
	m := regexp.MustCompile(`kubeoauth_signed_in_for=([0-9]+\.[A-Za-z0-9_-]+)`).FindStringSubmatch(page)
	legacy := regexp.MustCompile(`kubeoauth_signed_in_after=([0-9]+\.[A-Za-z0-9_-]+)`).FindStringSubmatch(page)
	if m == nil || legacy == nil {
		t.Fatalf("the login page carries no sign-in marker, or not the one a version before it reads: %.500s", page)
	}
	before := time.Now().Truncate(time.Second)
	idt, _ := signInToApp(t, in, b, cfg, login)
	if at := authTime(t, idt); at.Before(before) {
		t.Errorf("auth_time %v is before the forced sign-in at %v", at, before)
	}
	_, page = b.get(cfg.AuthCodeURL("state-login-00003", login, oauth2.S256ChallengeOption(oauth2.GenerateVerifier()),
		oauth2.SetAuthURLParam("kubeoauth_signed_in_for", m[1])))
	if !strings.Contains(page, `action="/login"`) {
		t.Fatalf("prompt=login with the sign-in marker of another request: %.300s; want the login page", page)
	}
	// The unbound marker is written for a version before this one during an upgrade,
	// never read.
	_, page = b.get(cfg.AuthCodeURL("state-login-00004", login, oauth2.S256ChallengeOption(oauth2.GenerateVerifier()),
		oauth2.SetAuthURLParam("kubeoauth_signed_in_after", legacy[1])))
	if !strings.Contains(page, `action="/login"`) {
		t.Fatalf("prompt=login with an unbound sign-in marker: %.300s; want the login page", page)
	}
}

// prompt=consent shows the consent page although the user consented before.
func TestPromptConsentAsksAgain(t *testing.T) {
	in := start(t, setup{})
	cfg := oauthConfig(in, logoutClient(t, in), "openid")
	b := newBrowser(t)
	signInToApp(t, in, b, cfg)
	cb := b.authorize(in, cfg.AuthCodeURL("state-consent-001", oauth2.SetAuthURLParam("prompt", "consent"),
		oauth2.S256ChallengeOption(oauth2.GenerateVerifier())), "approve")
	if cb.Get("code") == "" {
		t.Fatalf("prompt=consent, approved: %v; want a code", cb)
	}
}

// max_age: a sign-in older than max_age seconds sends the user to sign in again (or,
// with prompt=none, login_required to the app), and auth_time is the new sign-in's.
// A sign-in younger than max_age goes straight through.
func TestMaxAgeForcesAFreshSignIn(t *testing.T) {
	in := start(t, setup{})
	cfg := oauthConfig(in, logoutClient(t, in), "openid")
	b := newBrowser(t)
	first, _ := signInToApp(t, in, b, cfg)
	firstAt := authTime(t, first)

	if _, page := b.get(cfg.AuthCodeURL("state-maxage-0001", oauth2.SetAuthURLParam("max_age", "3600"),
		oauth2.S256ChallengeOption(oauth2.GenerateVerifier()))); strings.Contains(page, `action="/login"`) {
		t.Fatal("max_age=3600 right after signing in showed the login page")
	}
	// The session has to be older than max_age: there is no waiting for it but the clock.
	time.Sleep(2 * time.Second)
	// auth_time is when the user signed in, not when the token was issued.
	if later, _ := signInToApp(t, in, b, cfg); !authTime(t, later).Equal(firstAt) {
		t.Errorf("an ID token issued 2 s after the sign-in has auth_time %v; want the sign-in's %v", authTime(t, later), firstAt)
	}
	maxAge := oauth2.SetAuthURLParam("max_age", "1")
	resp, _ := b.noRedirects().get(cfg.AuthCodeURL("state-maxage-0002", maxAge, oauth2.SetAuthURLParam("prompt", "none"),
		oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	if loc, _ := resp.Location(); loc == nil || loc.Query().Get("error") != "login_required" {
		t.Errorf("prompt=none with a sign-in older than max_age: %d %v; want error=login_required", resp.StatusCode, loc)
	}
	_, page := b.get(cfg.AuthCodeURL("state-maxage-0003", maxAge, oauth2.S256ChallengeOption(oauth2.GenerateVerifier())))
	if !strings.Contains(page, `action="/login"`) {
		t.Fatalf("max_age=1 with a 2 s old sign-in: %.300s; want the login page", page)
	}
	idt, _ := signInToApp(t, in, b, cfg, maxAge)
	if at := authTime(t, idt); !at.After(firstAt) {
		t.Errorf("auth_time %v after the fresh sign-in; want later than the first sign-in's %v", at, firstAt)
	}
}
