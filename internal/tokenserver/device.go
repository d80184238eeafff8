package tokenserver

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ory/fosite/storage"

	"github.com/kubeoauth/kubeoauth/internal/oauth"
	"github.com/kubeoauth/kubeoauth/internal/store"
)

// The device authorization grant's pages (RFC 8628 section 3.3): a signed-in person
// enters the code their device shows, sees which app asks and who registered it, and
// approves or denies. The consent is asked every time, even when a grant or
// skipConsent would spare it in the code flow: the code may have been sent to the
// person by someone else, whose device would otherwise be signed in as them without a
// word (RFC 8628 section 5.4).

// deviceAuthPath is the device authorization endpoint.
const deviceAuthPath = "/oauth2/device/auth"

const deviceTitle = "Connect a device"

// isDeviceReturn says whether a sign-in may return to returnTo: the device page.
func isDeviceReturn(returnTo string) bool {
	return returnTo == oauth.DevicePath || strings.HasPrefix(returnTo, oauth.DevicePath+"?")
}

// devicePage shows the form to enter a user code, prefilled from
// verification_uri_complete; a visitor not signed in signs in first.
func (s *Server) devicePage(w http.ResponseWriter, r *http.Request) {
	if !s.parsePage(w, r) {
		return
	}
	code := r.Form.Get("user_code")
	if _, ok := s.deviceSignedIn(w, r, code); !ok {
		return
	}
	s.render(w, http.StatusOK, "device.html", page{Title: deviceTitle, CSRF: s.csrfToken(s.session(w, r)), UserCode: code})
}

// deviceSignedIn returns the signed-in subject; when there is none, it has answered
// with the sign-in page, which comes back to the device page with code.
func (s *Server) deviceSignedIn(w http.ResponseWriter, r *http.Request, code string) (signedInUser, bool) {
	user, ok, err := s.signedIn(r)
	if err != nil {
		s.sessionError(w, err)
		return signedInUser{}, false
	}
	if !ok {
		back := oauth.DevicePath
		if code != "" {
			back += "?" + url.Values{"user_code": {code}}.Encode()
		}
		s.renderLogin(w, http.StatusOK, page{CSRF: s.csrfToken(s.session(w, r)), ReturnTo: back})
		return signedInUser{}, false
	}
	return user, true
}

// deviceDecision takes a user code, and then the person's decision on it. Wrong codes
// are throttled per user and per address as failed sign-ins are: a pending code
// guessed would sign the guesser's device in as the person who enters it. A right
// code spends nothing but resets nothing either, or a guesser could start devices of
// its own to wipe its failures.
func (s *Server) deviceDecision(w http.ResponseWriter, r *http.Request) {
	if !s.parsePage(w, r) {
		return
	}
	code := strings.TrimSpace(r.PostForm.Get("user_code"))
	user, ok := s.deviceSignedIn(w, r, code)
	subject := user.Subject
	if !ok || !s.csrfChecked(w, r) {
		return
	}
	ctx := r.Context()
	again := func(status int, msg string) {
		s.render(w, status, "device.html", page{Title: deviceTitle, CSRF: s.csrfToken(s.session(w, r)), UserCode: code, Error: msg})
	}
	ip := clientIP(r, s.cfg.ClientIPHeader, s.cfg.ClientIPTrustedProxies)
	wait, done := s.userCodes.attempt(subject, ip, time.Now())
	if wait > 0 {
		secs := int(math.Ceil(wait.Seconds()))
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		s.cfg.Log.Warn("device code entry throttled", "subject", logUsername(subject), "ip", ip, "retryAfter", secs)
		again(http.StatusTooManyRequests, fmt.Sprintf("Too many wrong codes. Try again in %s.", plural(secs, "second")))
		return
	}
	dr, err := s.cfg.Provider.LookupDevice(ctx, code)
	switch {
	case errors.Is(err, store.ErrNotFound):
		done(loginFailed)
		s.cfg.Log.Info("wrong device code", "subject", logUsername(subject), "ip", ip)
		again(http.StatusBadRequest, "That code is wrong or has expired. Check the code your device shows, or start again on the device.")
		return
	case err != nil:
		done(loginAborted)
		s.unavailable(w, signInUnavailable)
		return
	}
	done(loginAborted)
	client, err := s.cfg.Store.GetClientByID(ctx, dr.ClientID)
	if err != nil {
		s.errorPage(w, storeErrStatus(err), "The app that asked cannot be found right now; try again.")
		return
	}
	switch r.PostForm.Get("decision") {
	case "approve":
		err := s.approveDevice(ctx, dr, client.ID, subject, user)
		s.deviceDone(w, r, err, "Your device is connected to "+client.Name+". You can close this page and return to it.")
	case "deny":
		s.deviceDone(w, r, s.cfg.Provider.DenyDevice(ctx, dr), "Your device was not connected. You can close this page.")
	default:
		s.render(w, http.StatusOK, "device.html", page{Title: "Allow " + client.Name + "?", Client: pageClient(client),
			Scopes: s.scopeLines(dr.Scopes), Subject: user.display(), CSRF: s.csrfToken(s.session(w, r)),
			UserCode: oauth.NormalizeUserCode(code)[:4] + "-" + oauth.NormalizeUserCode(code)[4:]})
	}
}

// approveDevice stores the user's consent grant and the approval in one transaction.
// The grant is mirrored as a ConsentGrant and skips consent in the code flow later:
// stored on its own, every person who approved a code someone else had used
// meanwhile (a phished code clicked by many) would keep one, though told the code
// was used.
func (s *Server) approveDevice(ctx context.Context, dr *oauth.DeviceRequest, clientID, subject string, user signedInUser) (err error) {
	tx, err := storage.MaybeBeginTx(ctx, s.cfg.Store)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = storage.MaybeRollbackTx(tx, s.cfg.Store)
		}
	}()
	g, err := s.cfg.Store.PutGrant(tx, browserConsent(clientID, subject, dr.Scopes))
	if err != nil {
		return err
	}
	if err := s.cfg.Provider.ApproveDevice(tx, dr, subject, user.Identity, g, user.AuthTime); err != nil {
		return err
	}
	return storage.MaybeCommitTx(tx, s.cfg.Store)
}

// deviceDone answers a decision: notice when it was recorded.
func (s *Server) deviceDone(w http.ResponseWriter, r *http.Request, err error, notice string) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		s.render(w, http.StatusConflict, "device.html", page{Title: deviceTitle, CSRF: s.csrfToken(s.session(w, r)),
			Error: "This code was used or expired meanwhile. Start again on the device."})
	case err != nil:
		s.cfg.Log.Error("recording a device decision", "err", err)
		w.Header().Set("Retry-After", "1")
		s.errorPage(w, storeErrStatus(err), "Your decision could not be recorded right now; try again in a moment.")
	default:
		s.render(w, http.StatusOK, "device.html", page{Title: deviceTitle, Notice: notice})
	}
}

// scopeLines are the consent pages' words for scopes (the authorization's and the
// device's): the TokenServer's descriptions, then the standard ones.
func (s *Server) scopeLines(scopes []string) []scopeLine {
	out := make([]scopeLine, 0, len(scopes))
	for _, sc := range scopes {
		d := s.cfg.ScopeDescriptions[sc]
		if d == "" {
			d = standardScopeDescriptions[sc]
		}
		if d == "" {
			d = "Use the permission “" + sc + "”"
		}
		out = append(out, scopeLine{Name: sc, Description: d})
	}
	return out
}
