package tokenserver

import (
	"errors"
	"net/http"
	"net/url"
	"slices"

	"github.com/kubeoauth/kubeoauth/internal/oauth"
	"github.com/kubeoauth/kubeoauth/internal/store"
)

// OpenID Connect RP-Initiated Logout 1.0: an app sends the user to endSessionPath to
// end their sign-in here, and may ask to have them sent back.
const (
	endSessionPath        = "/oauth2/logout"
	endSessionConfirmPath = "/oauth2/logout/confirm"
	signedOutNotice       = "You are signed out."
)

// logoutRequest is a checked end-session request. redirect is empty unless the URI
// is registered for the client the request names.
type logoutRequest struct {
	hint     *oauth.IDTokenHint
	client   *store.Client
	redirect string
	state    string
	// params are the request's own parameters, carried through the confirmation form.
	params url.Values
}

// parseLogout checks an end-session request. The error is a sentence for the user:
// a bad request is answered with a page, never with a redirect to an address that
// was not checked.
func (s *Server) parseLogout(r *http.Request) (*logoutRequest, string, error) {
	f := r.Form
	lr := &logoutRequest{state: f.Get("state"), params: url.Values{}}
	for _, k := range []string{"id_token_hint", "client_id", "post_logout_redirect_uri", "state"} {
		if v := f.Get(k); v != "" {
			lr.params.Set(k, v)
		}
	}
	clientID := f.Get("client_id")
	if raw := f.Get("id_token_hint"); raw != "" {
		h, err := s.cfg.Provider.VerifyIDTokenHint(raw)
		if err != nil {
			return nil, "The app that sent you here gave an ID token this server did not issue, so nothing was done. " +
				"Go back to the app and sign out there again.", nil
		}
		switch {
		case clientID != "" && !slices.Contains(h.Audience, clientID):
			return nil, "The app that sent you here named a client the ID token it gave was not issued to, so nothing was done.", nil
		case clientID == "" && len(h.Audience) == 1:
			clientID = h.Audience[0]
		}
		lr.hint = &h
	}
	if clientID != "" {
		c, err := s.cfg.Store.GetClientByID(r.Context(), clientID)
		switch {
		case errors.Is(err, store.ErrNotFound):
			return nil, "The app that sent you here is not registered on this server, so nothing was done.", nil
		case err != nil:
			return nil, "", err
		}
		lr.client = c
	}
	if u := f.Get("post_logout_redirect_uri"); u != "" {
		if lr.client == nil {
			return nil, "The sign-out link names an address to return to but not the app it belongs to " +
				"(client_id or id_token_hint), so nothing was done.", nil
		}
		// Exact match, as for redirect URIs: anything looser is an open redirect.
		if !slices.Contains(lr.client.PostLogoutRedirectURIs, u) {
			return nil, "The app that sent you here asked to return to an address it has not registered " +
				"(post_logout_redirect_uri), so nothing was done and you were not sent there.", nil
		}
		lr.redirect = u
	}
	return lr, "", nil
}

// endSession serves the end-session endpoint, GET and POST (the spec lets an app
// post its request, cross-site; a POST is answered with the same request as a GET). With a valid id_token_hint for the user signed
// in, the session ends at once: only an app the user signed in to holds such a
// token. Anything less (no hint, or a hint for someone else) gets a confirmation
// page, so that a link or image on another site cannot sign people out.
func (s *Server) endSession(w http.ResponseWriter, r *http.Request) {
	if !s.parsePage(w, r) {
		return
	}
	lr, msg, err := s.parseLogout(r)
	if s.logoutRefused(w, msg, err) {
		return
	}
	if r.Method == http.MethodPost {
		// An app's POST comes from its own site, and a SameSite=Lax session cookie
		// does not come with it: this server would see no session to end, and a new
		// cookie set now would only hide the live one. The same request as a
		// top-level GET carries the cookie.
		http.Redirect(w, r, endSessionPath+"?"+lr.params.Encode(), http.StatusSeeOther)
		return
	}
	user, ok, err := s.signedIn(r)
	if err != nil {
		s.sessionError(w, err)
		return
	}
	if !ok {
		s.signedOut(w, r, lr)
		return
	}
	if lr.hint == nil || lr.hint.Subject != user.Subject {
		s.render(w, http.StatusOK, "logout.html", page{Title: "Sign out?", Subject: user.display(), Client: pageClient(lr.client),
			CSRF: s.csrfToken(s.session(w, r)), Query: lr.params})
		return
	}
	s.endSignIn(w, r, lr)
}

// confirmEndSession takes the confirmation form's answer.
func (s *Server) confirmEndSession(w http.ResponseWriter, r *http.Request) {
	if !s.parsePage(w, r) || !s.csrfChecked(w, r) {
		return
	}
	lr, msg, err := s.parseLogout(r)
	if s.logoutRefused(w, msg, err) {
		return
	}
	if r.PostForm.Get("decision") != "sign_out" {
		http.Redirect(w, r, accountPath, http.StatusSeeOther)
		return
	}
	s.endSignIn(w, r, lr)
}

func (s *Server) logoutRefused(w http.ResponseWriter, msg string, err error) bool {
	switch {
	case err != nil:
		s.sessionError(w, err)
	case msg != "":
		s.errorPage(w, http.StatusBadRequest, msg)
	default:
		return false
	}
	return true
}

// endSignIn ends the session as the account page's sign-out does (for every replica
// and every copy of the cookie), then leaves the user where the app asked.
func (s *Server) endSignIn(w http.ResponseWriter, r *http.Request, lr *logoutRequest) {
	if s.signOutBrowser(w, r) {
		s.signedOut(w, r, lr)
	}
}

// signOutBrowser signs the browser out (every replica, every copy of the cookie) and
// gives it a fresh session; false when it has answered with the error page.
func (s *Server) signOutBrowser(w http.ResponseWriter, r *http.Request) bool {
	if err := s.signOut(r); err != nil {
		s.cfg.Log.Error("ending a sign-in session", "err", err)
		w.Header().Set("Retry-After", "1")
		s.errorPage(w, storeErrStatus(err), "You could not be signed out right now; try again in a moment.")
		return false
	}
	s.newSession(w)
	return true
}

// signedOut sends the user to the app's registered address, with its state, or
// shows that they are signed out.
func (s *Server) signedOut(w http.ResponseWriter, r *http.Request, lr *logoutRequest) {
	u, err := url.Parse(lr.redirect)
	if lr.redirect == "" || err != nil {
		s.render(w, http.StatusOK, "logout.html", page{Title: "Signed out", Notice: signedOutNotice})
		return
	}
	if lr.state != "" {
		q := u.Query()
		q.Set("state", lr.state)
		u.RawQuery = q.Encode()
	}
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u.String(), http.StatusSeeOther) // #nosec G710 -- registered for the client, checked in parseLogout
}
