package pages

import (
	"errors"
	"fmt"
	"html/template"
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of spec.branding, the same in the CRD's validation.
const (
	MaxDisplayName = 64
	// MaxLogoURL leaves room for a small image inline (data:); a larger one belongs at
	// an https URL. It counts bytes, as the CRD's rule does (not its maxLength, which
	// counts characters): the limit bounds what every page carries, and token server
	// images released before the CRD counted bytes too had this very check, so the
	// CRD bounds what all of them take.
	MaxLogoURL = 32768
)

// The logo URLs a page may show, the same expressions as the CRD's rule: https with a
// DNS host name and a port up to 65535 (no user info, so that the
// Content-Security-Policy can name a valid origin) and no
// character that could leave an attribute; or an inline PNG or SVG, base64. An <img>
// runs no script of an SVG, and nothing else (javascript:, http:, other data: types)
// is taken.
var (
	httpsLogo = regexp.MustCompile(`^https://[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*` +
		`(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?([/?][^\s\x22\x27<>\\]*)?$`)
	dataLogo = regexp.MustCompile(`^data:image/(png|svg\+xml);base64,[A-Za-z0-9+/]+={0,2}$`)
)

// ParseBrand checks a display name and a logo URL as the CRD does: the token server's
// last guard against flags set by hand.
func ParseBrand(name, logoURL string) (Brand, error) {
	if utf8.RuneCountInString(name) > MaxDisplayName {
		return Brand{}, fmt.Errorf("display name: at most %d characters", MaxDisplayName)
	}
	if strings.IndexFunc(name, notInDisplayName) >= 0 {
		return Brand{}, errors.New("display name: must be one line of text, without control characters, line or paragraph " +
			"separators, or bidirectional overrides and isolates")
	}
	if len(logoURL) > MaxLogoURL {
		return Brand{}, fmt.Errorf("logo URL: at most %d bytes", MaxLogoURL)
	}
	if logoURL != "" && !httpsLogo.MatchString(logoURL) && !dataLogo.MatchString(logoURL) {
		return Brand{}, errors.New("logo URL: must be an https URL (no user info) or a data:image/png;base64, or " +
			"data:image/svg+xml;base64, URL")
	}
	// #nosec G203 -- checked above: https or an inline image
	return Brand{Name: name, LogoURL: template.URL(logoURL)}, nil
}

// notInDisplayName is what the CRD's rule refuses in displayName: control
// characters, and those that would break the line or reorder the text around the
// name in the title and header (U+2028, U+2029, U+202A-U+202E, U+2066-U+2069).
func notInDisplayName(r rune) bool {
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || (r >= '\u202a' && r <= '\u202e') ||
		(r >= '\u2066' && r <= '\u2069')
}

// ImageSource is the Content-Security-Policy source that lets the logo load: its
// https origin, or data: for an inline one; empty without a logo.
func (b Brand) ImageSource() string { return ImageSource(string(b.LogoURL)) }

// ImageSource is the Content-Security-Policy source of an image URL: the origin of
// an https URL, data: for an inline image; empty for anything else, which the page
// then cannot load.
func ImageSource(u string) string {
	switch {
	case dataLogo.MatchString(u):
		return "data:"
	case httpsLogo.MatchString(u):
		rest := strings.TrimPrefix(u, "https://")
		if i := strings.IndexAny(rest, "/?"); i >= 0 {
			rest = rest[:i]
		}
		return "https://" + rest
	}
	return ""
}
