package pages

import "net/url"

// samples are the kinds of data a page is rendered with, as the token server fills
// them in: Parse renders a page with each, so that a template that would fail on a
// real request (a field that does not exist, a nil Client where a page may have
// none) is refused before any pod runs it. A page not listed here (one added later)
// gets the full data; its own kinds belong here.
// Sample values the pages are checked with.
const (
	sampleUpstream = "Example IdP"
	sampleUserCode = "WDJB-MJHT"
)

func samples(name string) []Data {
	const user, text, csrf, account = "alice", "Some text", "csrf", "/account"
	brand := Brand{Name: "Example Corp", LogoURL: "https://example.com/logo.png"}
	minimal := &Client{ID: "ns_app", Name: "App", OwnerNamespace: "ns"}
	client := *minimal
	client.LogoURI, client.ClientURI, client.PolicyURI, client.TOSURI = "https://app.example.com/logo.png",
		"https://app.example.com", "https://app.example.com/privacy", "https://app.example.com/terms"
	client.OwnerTeam, client.OwnerContact = "Team", "team@example.com"
	query := url.Values{"client_id": {client.ID}, "scope": {"openid profile"}}
	scopes := []Scope{{Name: "openid", Description: "Sign you in"}, {Name: "profile", Description: "See your name"}}
	grants := []Grant{{ClientID: client.ID, ClientName: client.Name, Owner: client.OwnerNamespace, GrantedAt: "2026-01-02 15:04 UTC",
		LastUsed: "never", Scopes: []string{"openid", "profile"}}}
	switch name {
	case "login.html":
		return []Data{
			{Brand: brand, Title: text, CSRF: csrf, ReturnTo: account, PasswordForm: true},
			{Title: text, CSRF: csrf, ReturnTo: account, Username: user, Error: text, Notice: text, PasswordForm: true,
				Upstream: sampleUpstream},
			{Title: text, CSRF: csrf, ReturnTo: account, Error: text, Upstream: sampleUpstream},
		}
	case "consent.html":
		return []Data{
			{Brand: brand, Title: text, Client: &client, Scopes: scopes, RedirectHost: "app.example.com", Subject: user,
				CSRF: csrf, Query: query},
			{Title: text, Client: minimal, Subject: user, CSRF: csrf},
		}
	case "account.html":
		return []Data{
			{Brand: brand, Title: text, Subject: user, Grants: grants, CSRF: csrf},
			{Title: text, Subject: user, CSRF: csrf},
		}
	case "logout.html":
		return []Data{
			{Brand: brand, Title: text, Subject: user, Client: &client, CSRF: csrf, Query: query},
			{Title: text, Subject: user, CSRF: csrf, Query: query},
			{Title: text, Notice: text},
		}
	case "device.html":
		return []Data{
			{Brand: brand, Title: text, CSRF: csrf, UserCode: sampleUserCode, Error: text},
			{Title: text, CSRF: csrf},
			{Brand: brand, Title: text, Client: &client, Scopes: scopes, Subject: user, CSRF: csrf, UserCode: sampleUserCode},
			{Title: text, Client: minimal, Subject: user, CSRF: csrf, UserCode: sampleUserCode},
			{Title: text, Notice: text},
		}
	case "error.html":
		return []Data{{Brand: brand, Title: text, Error: text}, {Title: text, Error: text}}
	}
	return []Data{{Brand: brand, Title: text, Error: text, Notice: text, CSRF: csrf, ReturnTo: account, Username: user,
		Upstream: sampleUpstream, PasswordForm: true,
		Subject: user, RedirectHost: "app.example.com", Client: &client, Scopes: scopes, Query: query, Grants: grants}}
}
