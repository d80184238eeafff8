package pages

import "net/url"

// samples are the kinds of data a page is rendered with, as the token server fills
// them in: Parse renders a page with each, so that a template that would fail on a
// real request (a field that does not exist, a nil Client where a page may have
// none) is refused before any pod runs it. A page not listed here (one added later)
// gets the full data; its own kinds belong here.
func samples(name string) []Data {
	brand := Brand{Name: "Example Corp", LogoURL: "https://example.com/logo.png"}
	client := &Client{ID: "ns_app", Name: "App", LogoURI: "https://app.example.com/logo.png", ClientURI: "https://app.example.com",
		PolicyURI: "https://app.example.com/privacy", TOSURI: "https://app.example.com/terms", OwnerNamespace: "ns",
		OwnerTeam: "Team", OwnerContact: "team@example.com"}
	query := url.Values{"client_id": {"ns_app"}, "scope": {"openid profile"}}
	full := Data{Brand: brand, Title: "Title", Error: "Error", Notice: "Notice", CSRF: "csrf", ReturnTo: "/account",
		Username: "alice", Subject: "alice", RedirectHost: "app.example.com", Client: client,
		Scopes: []Scope{{Name: "openid", Description: "Sign you in"}, {Name: "profile", Description: "See your name"}}, Query: query,
		Grants: []Grant{{ClientID: "ns_app", ClientName: "App", Owner: "ns", GrantedAt: "2026-01-02 15:04 UTC", LastUsed: "never",
			Scopes: []string{"openid", "profile"}}}}
	switch name {
	case "login.html":
		return []Data{
			{Brand: brand, Title: "Sign in", CSRF: "csrf", ReturnTo: "/account"},
			{Title: "Sign in", CSRF: "csrf", ReturnTo: "/account", Username: "alice", Error: "Error", Notice: "Notice"},
		}
	case "consent.html":
		return []Data{
			{Brand: brand, Title: "Allow App?", Client: client, Scopes: full.Scopes, RedirectHost: "app.example.com",
				Subject: "alice", CSRF: "csrf", Query: query},
			{Title: "Allow App?", Client: &Client{ID: "ns_app", Name: "App", OwnerNamespace: "ns"}, Subject: "alice", CSRF: "csrf"},
		}
	case "account.html":
		return []Data{
			{Brand: brand, Title: "Connected apps", Subject: "alice", Grants: full.Grants, CSRF: "csrf"},
			{Title: "Connected apps", Subject: "alice", CSRF: "csrf"},
		}
	case "logout.html":
		return []Data{
			{Brand: brand, Title: "Sign out?", Subject: "alice", Client: client, CSRF: "csrf", Query: query},
			{Title: "Sign out?", Subject: "alice", CSRF: "csrf", Query: query},
			{Title: "Signed out", Notice: "Notice"},
		}
	case "error.html":
		return []Data{{Brand: brand, Title: "Error", Error: "Error"}, {Title: "Error", Error: "Error"}}
	}
	return []Data{full}
}
