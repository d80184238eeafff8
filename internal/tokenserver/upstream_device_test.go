package tokenserver_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// A person who signs in through the upstream provider on the device page, and
// approves there, gives the device an ID token and userinfo with the provider's
// email and groups: the device grant takes the signed-in user's identity from the
// sign-in session, as the code flow does, not from the users file only.
func TestDeviceApprovedByAnUpstreamUser(t *testing.T) {
	ctx := context.Background()
	op := startOP(t)
	in := start(t, setup{deviceInterval: time.Second, upstream: upstreamSettings(op.Issuer, "platform")})
	op.up(in)
	cfg := deviceClient(t, in, "tv")
	cfg.Scopes = []string{"openid", "profile", "email", "groups"}

	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t)
	_, page := b.get(da.VerificationURIComplete)
	resp, page := b.upstreamLogin(in, op, page, "carol")
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, `id="user_code"`) {
		t.Fatalf("after signing in upstream: %d %.600s; want the device page with the code", resp.StatusCode, page)
	}
	resp, confirm := b.enterCode(in, da.VerificationURIComplete, "")
	if resp.StatusCode != http.StatusOK || !strings.Contains(confirm, "carol") {
		t.Fatalf("confirmation page: %d %.600s; want it to name carol", resp.StatusCode, confirm)
	}
	if resp, page := b.decide(in, confirm, "approve"); resp.StatusCode != http.StatusOK || !strings.Contains(page, `id="notice"`) {
		t.Fatalf("approval: %d %.400s", resp.StatusCode, page)
	}
	pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tok, err := cfg.DeviceAccessToken(pctx, da)
	if err != nil {
		t.Fatalf("DeviceAccessToken: %v", err)
	}
	provider, err := oidc.NewProvider(ctx, in.URL)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := tok.Extra("id_token").(string)
	idt, err := provider.Verifier(&oidc.Config{ClientID: "tv"}).Verify(ctx, raw)
	if err != nil {
		t.Fatalf("go-oidc rejected the ID token: %v", err)
	}
	var claims userClaims
	if err := idt.Claims(&claims); err != nil {
		t.Fatal(err)
	}
	if claims.PreferredUsername != "carol" || deref(claims.Email) != "carol@corp.example" || !slices.Equal(claims.Groups, []string{"platform", "oncall"}) {
		t.Errorf("ID token: %s; want carol's name, email and groups from the provider", show(claims))
	}
	if ui := userinfoClaims(t, in, tok); deref(ui.Email) != "carol@corp.example" || !slices.Equal(ui.Groups, []string{"platform", "oncall"}) {
		t.Errorf("userinfo: %s; want carol's email and groups", show(ui))
	}
}
