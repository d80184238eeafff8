package pages

import (
	"html/template"
	"net/url"
)

// Data is what every template receives as its dot. It is the contract with a
// TokenServer's own templates (docs/identity.md "Branding and custom pages"): a
// field is only ever added. A page leaves the fields it does not use empty.
type Data struct {
	// Brand is the TokenServer's display name and logo; every page has it.
	Brand Brand
	// Title of the page, such as "Sign in" (every page).
	Title string
	// Error is what went wrong (error.html; login.html after a failed sign-in).
	Error string
	// Notice is a neutral message, such as "You are signed out." (login.html,
	// logout.html).
	Notice string
	// CSRF is the token every form must post back as the field "csrf"; empty on
	// pages without a form.
	CSRF string
	// ReturnTo is where login.html's form returns after signing in (the hidden field
	// "return_to").
	ReturnTo string
	// Username is what was typed on login.html before a failed sign-in.
	Username string
	// Subject is the signed-in user (consent.html, account.html, logout.html).
	Subject string
	// RedirectHost is the host the consent page sends the user back to.
	RedirectHost string
	// Client is the app asking (consent.html; logout.html when an app asks, else
	// nil).
	Client *Client
	// Scopes the app asks for (consent.html).
	Scopes []Scope
	// Query is the authorization or end-session request, posted back as hidden
	// fields by consent.html and logout.html.
	Query url.Values
	// Grants are the user's connected apps (account.html).
	Grants []Grant
	// UserCode is the device's user code (device.html): typed so far on the entry
	// form, or the one to confirm, shown XXXX-XXXX.
	UserCode string
	// Upstream labels login.html's button to the upstream OpenID provider ("" when
	// there is none); PasswordForm says whether login.html shows the username and
	// password form (a users Secret is configured).
	Upstream     string
	PasswordForm bool
}

// Brand is what a TokenServer's spec.branding shows on every page.
type Brand struct {
	// Name is spec.branding.displayName; may be empty.
	Name string
	// LogoURL is spec.branding.logoURL, checked by ParseBrand: https or a data: URL
	// of a PNG or SVG image, so that html/template lets it into src attributes.
	LogoURL template.URL
}

// Client is what the pages show of an app: never its credentials.
type Client struct {
	ID, Name, LogoURI, ClientURI, PolicyURI, TOSURI string
	// OwnerNamespace is verified: the namespace the app was registered from.
	OwnerNamespace string
	// OwnerTeam and OwnerContact are what the app says of itself, unverified.
	OwnerTeam, OwnerContact string
}

// Scope is one line of the consent page.
type Scope struct{ Name, Description string }

// Grant is one row of the account page.
type Grant struct {
	ClientID, ClientName, Owner, GrantedAt, LastUsed string
	Scopes                                           []string
}
