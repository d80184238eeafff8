package tokenserver

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/oauth"
)

// signedInForParam is added to the authorization request that the login page
// returns to. It carries, signed, when that login page was shown: a session that
// signed in since then is the fresh sign-in prompt=login and max_age asked for, and
// is not sent to sign in once more (a request that still says prompt=login would
// otherwise loop). fosite ignores parameters it does not know.
//
// legacyMarkerParam carries the same time signed as versions before the binding to
// the request (signedInAfterMAC) did, and is only written, never read: while such
// a version serves beside this one in an upgrade, a login page of either color
// returns to a request the other also takes, instead of asking again whenever the
// next request lands on the other color.
const (
	signedInForParam  = oauth.SignedInForParam
	legacyMarkerParam = oauth.SignedInAfterParam
)

// signedInAfterLifetime bounds how long a login page's marker counts: long enough to
// sign in and consent, short enough that an old link cannot stretch max_age.
const signedInAfterLifetime = time.Hour

// markerMAC signs msg as the login page's markers are signed.
func (s *Server) markerMAC(msg string) string {
	m := hmac.New(sha256.New, append([]byte("kubeoauth-signed-in-after:"), s.cfg.CookieSecret...))
	m.Write([]byte(msg))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// signedInAfterMAC signs a marker's time for one authorization request: its client,
// redirect URI and state, the app's own binding of the request to its user. A
// marker taken from the login page of another request (anyone's: the page is
// anyone's to open) does not count for this one, so a link cannot carry a marker
// that turns prompt=login into "signed in since some login page was shown".
func (s *Server) signedInAfterMAC(unix string, areq *oauth.AuthorizeRequest) string {
	var msg strings.Builder
	for _, part := range []string{unix, areq.ClientID, areq.RedirectURI, areq.State} {
		msg.WriteString(strconv.Itoa(len(part)) + ":" + part)
	}
	return s.markerMAC(msg.String())
}

// signedInAfterMarker marks the login page of areq shown at t. Seconds, as the
// session cookie keeps its sign-in time.
func (s *Server) signedInAfterMarker(t time.Time, areq *oauth.AuthorizeRequest) string {
	unix := strconv.FormatInt(t.Unix(), 10)
	return unix + "." + s.signedInAfterMAC(unix, areq)
}

// legacyMarker is the marker of a login page shown at t as versions before the
// binding to the request signed it (legacyMarkerParam): the time alone.
func (s *Server) legacyMarker(t time.Time) string {
	unix := strconv.FormatInt(t.Unix(), 10)
	return unix + "." + s.markerMAC(unix)
}

// signedInAfter reads the request's marker, if it is ours, for areq, and recent.
func (s *Server) signedInAfter(r *http.Request, areq *oauth.AuthorizeRequest, now time.Time) (time.Time, bool) {
	unix, mac, ok := strings.Cut(r.Form.Get(signedInForParam), ".")
	if !ok || subtle.ConstantTimeCompare([]byte(mac), []byte(s.signedInAfterMAC(unix, areq))) != 1 {
		return time.Time{}, false
	}
	n, err := strconv.ParseInt(unix, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	t := time.Unix(n, 0)
	return t, now.Sub(t) <= signedInAfterLifetime
}

// loginReturn is where the login page shown for this authorization request goes
// after the sign-in: the same request, marked with when the page was shown.
func (s *Server) loginReturn(r *http.Request, areq *oauth.AuthorizeRequest, now time.Time) string {
	q := authorizeQuery(r)
	q.Set(signedInForParam, s.signedInAfterMarker(now, areq))
	q.Set(legacyMarkerParam, s.legacyMarker(now))
	return "/oauth2/auth?" + q.Encode()
}

// freshSignIn decides whether a signed-in user must sign in again for this request
// (OpenID Connect Core 3.1.2.1): prompt=login asks for it, and max_age for a sign-in
// no older than max_age seconds (max_age=0 is prompt=login). A sign-in made after
// the login page this request came back from satisfies both. requestedAt is when
// the request counts as made, for fosite's own prompt and max_age checks and as the
// ID token's reference: the login page's time after a forced sign-in, else now.
// signedInAt is when the session started here, authTime when the user last
// authenticated (an upstream provider's auth_time may be older): a session started
// after the login page was shown has been checked against prompt and max_age
// already, at the provider's callback for an upstream user.
func (s *Server) freshSignIn(r *http.Request, areq *oauth.AuthorizeRequest, prompt []string,
	signedInAt, authTime, now time.Time) (requestedAt time.Time, again bool) {
	maxAge := areq.MaxAge
	if t, ok := s.signedInAfter(r, areq, now); ok && !signedInAt.Before(t) {
		return t, false
	}
	if slices.Contains(prompt, "login") {
		return now, true
	}
	if maxAge != "" {
		if n, err := strconv.ParseInt(maxAge, 10, 64); err == nil && n >= 0 &&
			now.Sub(authTime) > time.Duration(n)*time.Second {
			return now, true
		}
	}
	return now, false
}
