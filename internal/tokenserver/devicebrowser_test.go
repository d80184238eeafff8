package tokenserver_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"

	"github.com/kubeoauth/kubeoauth/internal/testing/headless"
)

// The device pages in a real browser, as a person uses them while the device polls
// with golang.org/x/oauth2: open verification_uri, sign in, type the code in lower
// case, check the app and the code on the consent page, allow; the device gets tokens.
func TestDevicePagesInHeadlessChromium(t *testing.T) {
	ctx := context.Background()
	in := start(t, setup{deviceInterval: time.Second})
	cfg := deviceClient(t, in, "tv")
	da, err := cfg.DeviceAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	type result struct {
		tok *oauth2.Token
		err error
	}
	polled := make(chan result, 1)
	go func() {
		tok, err := cfg.DeviceAccessToken(pctx, da)
		polled <- result{tok, err}
	}()

	bctx := headless.Chromium(t)
	var appName, shown, notice string
	if err := chromedp.Run(bctx,
		chromedp.Navigate(da.VerificationURI),
		chromedp.WaitVisible("#username", chromedp.ByID),
		chromedp.SendKeys("#username", "alice", chromedp.ByID),
		chromedp.SendKeys("#password", alicePassword, chromedp.ByID),
		chromedp.Click("#sign-in", chromedp.ByID),
		chromedp.WaitVisible("#user_code", chromedp.ByID),
		chromedp.SendKeys("#user_code", strings.ToLower(da.UserCode), chromedp.ByID),
		chromedp.Click("#continue", chromedp.ByID),
		chromedp.WaitVisible("#approve", chromedp.ByID),
		chromedp.Text("#app-name", &appName, chromedp.ByID),
		chromedp.Text("#user-code", &shown, chromedp.ByID),
		chromedp.Click("#approve", chromedp.ByID),
		chromedp.WaitVisible("#notice", chromedp.ByID),
		chromedp.Text("#notice", &notice, chromedp.ByID),
	); err != nil {
		t.Fatal(err)
	}
	if appName != "TV app tv" || shown != da.UserCode || !strings.Contains(notice, "connected") {
		t.Errorf("device pages: app %q, code shown %q (want %q), notice %q", appName, shown, da.UserCode, notice)
	}
	select {
	case r := <-polled:
		if r.err != nil || r.tok.AccessToken == "" || r.tok.Extra("id_token") == nil {
			t.Errorf("DeviceAccessToken = %v, %v; want tokens with an ID token", r.tok, r.err)
		}
	case <-pctx.Done():
		t.Fatal("the device got no tokens within a minute")
	}
}
