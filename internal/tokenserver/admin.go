package tokenserver

import (
	"bytes"
	"cmp"
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v3"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/oauth"
	"github.com/kubeoauth/kubeoauth/internal/store"
)

// AdminHandler serves the admin API (docs/admin-api.md) on its own listener.
func (s *Server) AdminHandler() http.Handler {
	m := s.cfg.Metrics
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /admin/clients/{id}", m.instrument("admin_clients", s.putClient))
	mux.HandleFunc("GET /admin/clients/{id}", m.instrument("admin_clients", s.getClient))
	mux.HandleFunc("GET /admin/clients", m.instrument("admin_clients", s.listClients))
	mux.HandleFunc("DELETE /admin/clients/{id}", m.instrument("admin_client_revoke", s.deleteClient))
	mux.HandleFunc("PUT /admin/grants/{client}/{subject}", m.instrument("admin_grants", s.putGrant))
	mux.HandleFunc("GET /admin/grants", m.instrument("admin_grants", s.listGrants))
	mux.HandleFunc("DELETE /admin/grants/{client}/{subject}", m.instrument("admin_grant_revoke", s.deleteGrant))
	mux.HandleFunc("GET /admin/events", m.instrument("admin_events", s.events))
	mux.HandleFunc("POST /admin/verify/authorize", m.instrument("admin_verify", s.verifyAuthorize))
	mux.HandleFunc("GET /admin/health", s.readyz) // readiness, for callers checking their token too
	authed := s.requireAdmin(mux)
	outer := http.NewServeMux()
	outer.HandleFunc("GET /healthz", s.healthz)
	outer.HandleFunc("GET /readyz", s.readyz)
	outer.Handle("/admin/", authed)
	return s.common(s.fenced(outer, true))
}

func (s *Server) requireAdmin(next http.Handler) http.Handler {
	want := []byte("Bearer " + s.cfg.AdminToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.cfg.AdminToken == "" || subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="kubeoauth-admin"`)
			adminError(w, http.StatusUnauthorized, "", "a valid admin bearer token is required")
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
		next.ServeHTTP(w, r)
	})
}

func adminError(w http.ResponseWriter, code int, field, msg string) {
	writeJSON(w, code, adminapi.Error{Message: msg, Field: field})
}

func (s *Server) storeError(w http.ResponseWriter, err error) {
	if errors.Is(err, store.ErrOwnerConflict) {
		// Names the owner: the caller is the operator, which reports it in the clashing
		// OAuthClient's condition so its namespace learns why it cannot have that ID.
		adminError(w, http.StatusConflict, "ownerNamespace", err.Error())
		return
	}
	code := storeErrStatus(err)
	msg := err.Error()
	if code == http.StatusInternalServerError {
		s.cfg.Log.Error("admin API", "err", err)
		msg = "internal error"
	}
	adminError(w, code, "", msg)
}

// Grant types and client authentication methods the server supports; discovery
// advertises the same lists.
const (
	grantAuthorizationCode = "authorization_code"
	grantClientCredentials = "client_credentials"
	grantRefreshToken      = "refresh_token"
	fieldGrantTypes        = "grantTypes"
)

var (
	knownGrantTypes  = []string{grantAuthorizationCode, grantClientCredentials, grantRefreshToken, oauth.GrantDeviceCode, oauth.GrantJWTBearer}
	knownAuthMethods = []string{adminapi.AuthClientSecretBasic, adminapi.AuthClientSecretPost, adminapi.AuthPrivateKeyJWT, adminapi.AuthNone}
)

// validateClient checks what the token server relies on; the CRD validates the rest
// earlier, but the admin API is a boundary of its own. It returns the first field at
// fault and what is wrong with it.
func validateClient(c *adminapi.Client, id string) (field, msg string) {
	for _, check := range []func(*adminapi.Client, string) (string, string){
		validateIdentity, validateAuthentication, validateLifespans, validateKeys, validateRedirects, validateGrants,
	} {
		if field, msg = check(c, id); field != "" {
			return field, msg
		}
	}
	return "", ""
}

func validateIdentity(c *adminapi.Client, id string) (string, string) {
	switch {
	case c.ID != "" && c.ID != id:
		return "id", fmt.Sprintf("must match the URL (%q)", id)
	case c.Name == "":
		return "name", "is required"
	case len(c.GrantTypes) == 0:
		return fieldGrantTypes, "needs at least one grant type"
	}
	for _, g := range c.GrantTypes {
		if !slices.Contains(knownGrantTypes, g) {
			return fieldGrantTypes, fmt.Sprintf("unknown grant type %q; known: %v", g, knownGrantTypes)
		}
	}
	for _, rt := range c.ResponseTypes {
		if !slices.Contains(supportedResponseTypes, rt) {
			return "responseTypes", fmt.Sprintf("unsupported response type %q: this server answers %v "+
				"(the authorization code flow; no implicit or hybrid flow)", rt, supportedResponseTypes)
		}
	}
	return "", ""
}

// supportedResponseTypes are what the composed authorization handlers answer, the
// list discovery gives as response_types_supported.
var supportedResponseTypes = []string{"code"}

func validateAuthentication(c *adminapi.Client, _ string) (string, string) {
	public := c.TokenEndpointAuthMethod == adminapi.AuthNone
	switch {
	case !slices.Contains(knownAuthMethods, c.TokenEndpointAuthMethod):
		return "tokenEndpointAuthMethod", fmt.Sprintf("must be one of %v", knownAuthMethods)
	case public && c.Secret != "":
		return "secret", "a public client (tokenEndpointAuthMethod none) has no secret"
	case public && slices.Contains(c.GrantTypes, grantClientCredentials):
		return fieldGrantTypes, "a public client cannot use client_credentials"
	case !public && c.TokenEndpointAuthMethod != adminapi.AuthPrivateKeyJWT && len(c.Secret) < store.MinSecretLength:
		return "secret", fmt.Sprintf("must be at least %d characters", store.MinSecretLength)
	case c.PreviousSecret != "" && c.PreviousSecretExpiresAt == nil:
		return "previousSecretExpiresAt", "is required with previousSecret"
	case c.TokenEndpointAuthMethod == adminapi.AuthPrivateKeyJWT && len(c.JWKS) == 0 && c.JWKSURI == "":
		return "jwks", "private_key_jwt needs jwks or jwksURI"
	}
	return "", ""
}

// maxClientLifespans bound a client's own lifespans (the OAuthClient CRD says the
// same): every token is a row of the shared database until it expires, and the
// janitor deletes only expired ones, so a tenant's lifespan of years would keep each
// of its tokens for years. The TokenServer's own lifespans, the platform team's, are
// not bounded.
var maxClientLifespans = map[string]time.Duration{
	"accessToken": 24 * time.Hour, "refreshToken": 8760 * time.Hour, "idToken": 24 * time.Hour, "authorizationCode": 10 * time.Minute,
}

func validateLifespans(c *adminapi.Client, _ string) (string, string) {
	for _, k := range slices.Sorted(maps.Keys(c.TokenLifespans)) {
		v := c.TokenLifespans[k]
		limit, known := maxClientLifespans[k]
		if !known {
			return "tokenLifespans." + k, "unknown lifespan; known: accessToken, refreshToken, idToken, authorizationCode"
		}
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return "tokenLifespans." + k, fmt.Sprintf("%q must be a positive duration such as 15m", v)
		}
		if d > limit {
			return "tokenLifespans." + k, fmt.Sprintf("%q must be at most %s", v, strings.TrimSuffix(strings.TrimSuffix(limit.String(), "0s"), "0m"))
		}
	}
	return "", ""
}

func validateKeys(c *adminapi.Client, _ string) (string, string) {
	if len(c.JWKS) == 0 {
		return "", ""
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(c.JWKS, &set); err != nil || len(set.Keys) == 0 {
		return "jwks", "must be a JSON Web Key Set with at least one key"
	}
	for i, k := range set.Keys {
		if !k.IsPublic() {
			return fmt.Sprintf("jwks.keys[%d]", i), "must be a public key: a client never shares its private key"
		}
	}
	return "", ""
}

func validateRedirects(c *adminapi.Client, _ string) (string, string) {
	if slices.Contains(c.GrantTypes, grantAuthorizationCode) && len(c.RedirectURIs) == 0 {
		return "redirectURIs", "needs at least one URI for authorization_code"
	}
	for i, u := range c.RedirectURIs {
		p, err := url.Parse(u)
		if err != nil || !p.IsAbs() || p.Host == "" || p.Fragment != "" {
			return fmt.Sprintf("redirectURIs[%d]", i), "must be an absolute URL without a fragment"
		}
	}
	for i, u := range c.PostLogoutRedirectURIs {
		p, err := url.Parse(u)
		if err != nil || !p.IsAbs() || p.Host == "" || p.Fragment != "" || strings.Contains(u, "#") {
			return fmt.Sprintf("postLogoutRedirectURIs[%d]", i), "must be an absolute URL without a fragment"
		}
	}
	return "", ""
}

func (s *Server) putClient(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var in adminapi.Client
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		adminError(w, http.StatusBadRequest, "", "invalid JSON body: "+err.Error())
		return
	}
	if field := notTextField(reflect.ValueOf(in), "", map[string]string{"id": id, "owner": r.URL.Query().Get("owner")}); field != "" {
		adminError(w, http.StatusBadRequest, field, notTextValue)
		return
	}
	if field, msg := validateClient(&in, id); field != "" {
		adminError(w, http.StatusUnprocessableEntity, field, msg)
		return
	}
	// The token endpoint refuses such an audience too; said here, so that the
	// OAuthClient naming it learns why when it is applied.
	if i, err := oauth.ForeignAudience(r.Context(), s.cfg.Store, id, in.OwnerNamespace, in.Audience); err != nil {
		s.storeError(w, err)
		return
	} else if i >= 0 {
		adminError(w, http.StatusUnprocessableEntity, fmt.Sprintf("audience[%d]", i),
			"is the client ID of an OAuthClient in another namespace: a token for it could pass for that app's ID token; "+
				"name a URL of the API instead")
		return
	}
	c := toStoreClient(id, &in, s.cfg.SecretHasher)
	changed, err := s.cfg.Store.PutClient(r.Context(), c)
	if err != nil {
		s.storeError(w, err)
		return
	}
	if changed {
		s.cfg.Log.Info("client stored", "client_id", id, "owner", in.OwnerNamespace)
	}
	s.writeClient(w, r.Context(), id, changed)
}

func (s *Server) writeClient(w http.ResponseWriter, ctx context.Context, id string, changed bool) {
	c, err := s.cfg.Store.GetClientByID(ctx, id)
	if err != nil {
		s.storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, adminapi.ClientStatus{Client: fromStoreClient(c), Changed: changed,
		CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt})
}

func (s *Server) getClient(w http.ResponseWriter, r *http.Request) {
	s.writeClient(w, r.Context(), r.PathValue("id"), false)
}

func (s *Server) listClients(w http.ResponseWriter, r *http.Request) {
	limit, after, ok := pageParams(w, r)
	if !ok {
		return
	}
	if strings.Contains(after, grantKeySep) {
		adminError(w, http.StatusUnprocessableEntity, "continue", "is not a token of this list")
		return
	}
	cs, err := s.cfg.Store.ListClients(r.Context(), store.Page{After: after, Limit: limit})
	if err != nil {
		s.storeError(w, err)
		return
	}
	out := make([]adminapi.ClientStatus, 0, len(cs))
	for _, c := range cs {
		out = append(out, adminapi.ClientStatus{Client: fromStoreClient(c), CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt})
	}
	writePage(w, r, out, limit, func(c adminapi.ClientStatus) string { return c.ID })
}

// deleteClient deletes a client; ?owner= makes it conditional on the owner namespace,
// which the operator always sends so that it never deletes another namespace's
// client. Without it, it is an administrator's delete of whatever is there.
func (s *Server) deleteClient(w http.ResponseWriter, r *http.Request) {
	if err := s.cfg.Store.DeleteClient(r.Context(), r.PathValue("id"), r.URL.Query().Get("owner")); err != nil {
		s.storeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) putGrant(w http.ResponseWriter, r *http.Request) {
	var in adminapi.Grant
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		adminError(w, http.StatusBadRequest, "", "invalid JSON body: "+err.Error())
		return
	}
	if field := notTextField(reflect.ValueOf(in), "", map[string]string{"client": r.PathValue("client"),
		"subject": r.PathValue("subject"), "owner": r.URL.Query().Get("owner")}); field != "" {
		adminError(w, http.StatusBadRequest, field, notTextValue)
		return
	}
	// ?owner= is the operator's precondition: the client must be that namespace's,
	// checked in the write's transaction (409 otherwise).
	g := &store.ConsentGrant{ClientID: r.PathValue("client"), Subject: r.PathValue("subject"), Scopes: in.Scopes,
		Source: store.SourceDeclared, Owner: r.URL.Query().Get("owner")}
	if in.Source != "" {
		var ok bool
		if g.Source, ok = storeSources[in.Source]; !ok {
			adminError(w, http.StatusUnprocessableEntity, "source", "must be declared or browser")
			return
		}
	}
	if len(g.Scopes) == 0 {
		adminError(w, http.StatusUnprocessableEntity, "scopes", "needs at least one scope")
		return
	}
	if in.ExpiresAt != nil {
		g.ExpiresAt = in.ExpiresAt.UTC()
	}
	out, err := s.cfg.Store.PutGrant(r.Context(), g)
	if err != nil {
		s.storeError(w, err)
		return
	}
	// Read back with its live token count, as GET and the list report it.
	if counted, err := s.cfg.Store.GetGrant(r.Context(), out.ClientID, out.Subject); err == nil {
		out = counted
	}
	writeJSON(w, http.StatusOK, toAPIGrant(out))
}

func (s *Server) listGrants(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	// An unknown source would match nothing: a caller's typo must not read as "none".
	filter := store.GrantFilter{ClientID: q.Get("client_id"), Subject: q.Get("subject")}
	if src := q.Get("source"); src != "" {
		var ok bool
		if filter.Source, ok = storeSources[src]; !ok {
			adminError(w, http.StatusUnprocessableEntity, "source", "must be declared or browser")
			return
		}
	}
	limit, after, ok := pageParams(w, r)
	if !ok {
		return
	}
	filter.Limit = limit
	if after != "" {
		var found bool
		if filter.AfterClientID, filter.AfterSubject, found = strings.Cut(after, grantKeySep); !found {
			adminError(w, http.StatusUnprocessableEntity, "continue", "is not a token this server gave")
			return
		}
	}
	gs, err := s.cfg.Store.ListGrants(r.Context(), filter)
	if err != nil {
		s.storeError(w, err)
		return
	}
	out := make([]adminapi.Grant, 0, len(gs))
	for _, g := range gs {
		out = append(out, toAPIGrant(g))
	}
	writePage(w, r, out, limit, func(g adminapi.Grant) string { return g.ClientID + grantKeySep + g.Subject })
}

// grantKeySep joins a grant's client ID and subject in its place in a list: no
// client ID holds it (they are printable).
const grantKeySep = "\x00"

// A list asked for by pages (?limit=) answers at most maxListLimit items, and
// stops before the one that would take its encoding past listPageBytes (it holds
// one at least), so that no answer outgrows what a caller reads of one (the
// operator reads 8 MiB): a client may be a couple of hundred kilobytes. A list
// asked for whole (no ?limit=, as callers from before pages do) is answered whole.
const (
	maxListLimit  = 1000
	listPageBytes = 4 << 20
)

// pageParams reads a list's ?limit= and ?continue= (the key after which it goes
// on); ok is false when it answered that they are invalid.
func pageParams(w http.ResponseWriter, r *http.Request) (limit int, after string, ok bool) {
	q := r.URL.Query()
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			adminError(w, http.StatusUnprocessableEntity, "limit", fmt.Sprintf("must be a number from 1 to %d", maxListLimit))
			return 0, "", false
		}
		limit = n
	}
	if v := q.Get("continue"); v != "" {
		key, err := base64.RawURLEncoding.DecodeString(v)
		// A key is text PostgreSQL holds: UTF-8, without NUL but where a grant's
		// joins its two parts (grantKeySep), which listGrants checks.
		if err != nil || limit == 0 || !utf8.Valid(key) || bytes.Count(key, []byte(grantKeySep)) > 1 {
			adminError(w, http.StatusUnprocessableEntity, "continue", "is not a token this server gave, with a limit")
			return 0, "", false
		}
		after = string(key)
	}
	return limit, after, true
}

// writePage answers items, a page of limit (0: the whole list), as a JSON array.
// When more may follow — the store gave a full page, or listPageBytes cut it — a
// Link header (RFC 8288) names the next page: the same request, continued after
// the last item answered (key gives an item's place in the list).
func writePage[T any](w http.ResponseWriter, r *http.Request, items []T, limit int, key func(T) string) {
	if limit == 0 {
		writeJSON(w, http.StatusOK, items)
		return
	}
	var body bytes.Buffer
	body.WriteByte('[')
	n := 0
	for _, it := range items {
		enc, err := json.Marshal(it)
		if err != nil {
			adminError(w, http.StatusInternalServerError, "", "encode the list: "+err.Error())
			return
		}
		if n > 0 && body.Len()+len(enc) > listPageBytes {
			break
		}
		if n > 0 {
			body.WriteByte(',')
		}
		body.Write(enc)
		n++
	}
	body.WriteString("]\n")
	if n > 0 && (n < len(items) || len(items) == limit) {
		q := r.URL.Query()
		q.Set("continue", base64.RawURLEncoding.EncodeToString([]byte(key(items[n-1]))))
		w.Header().Set("Link", "<"+r.URL.Path+"?"+q.Encode()+`>; rel="next"`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body.Bytes())
}

func (s *Server) deleteGrant(w http.ResponseWriter, r *http.Request) {
	if err := s.cfg.Store.RevokeOwnedGrant(r.Context(), r.PathValue("client"), r.PathValue("subject"),
		r.URL.Query().Get("owner")); err != nil {
		s.storeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// maxEventWait bounds a long poll; clients re-ask.
const maxEventWait = 60 * time.Second

// events returns log entries after ?after=, waiting up to ?wait= (a duration, at most
// a minute) for the first one; NOTIFY wakes the wait.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	after, err := strconv.ParseInt(q.Get("after"), 10, 64)
	if q.Get("after") != "" && (err != nil || after < 0) {
		adminError(w, http.StatusBadRequest, "after", "must be a sequence number (a non-negative integer)")
		return
	}
	var wait time.Duration
	if q.Get("wait") != "" {
		if wait, err = time.ParseDuration(q.Get("wait")); err != nil || wait < 0 {
			adminError(w, http.StatusBadRequest, "wait", "must be a duration such as 30s")
			return
		}
	}
	wait = min(wait, maxEventWait)
	limit := 500
	deadline := time.After(wait)
	for {
		var woken <-chan struct{}
		if s.cfg.Events != nil {
			woken = s.cfg.Events.Wait() // before reading, so no notification slips between
		}
		evs, err := s.cfg.Store.Events(r.Context(), after, limit)
		if err != nil {
			s.storeError(w, err)
			return
		}
		if len(evs) > 0 || wait == 0 {
			out := adminapi.Events{Events: make([]adminapi.Event, 0, len(evs)), Next: after}
			for _, e := range evs {
				out.Events = append(out.Events, toAPIEvent(e))
				out.Next = e.Seq
			}
			writeJSON(w, http.StatusOK, out)
			return
		}
		select {
		case <-woken:
		case <-time.After(time.Second): // a missed NOTIFY costs at most a second
		case <-deadline:
			wait = 0
		case <-r.Context().Done():
			if errors.Is(r.Context().Err(), context.Canceled) {
				return
			}
			return
		}
	}
}

const notTextValue = "must be text: holds invalid UTF-8 or a NUL byte, which the store cannot keep"

// notTextField names the first value of a request that the store cannot keep as text
// (invalid UTF-8 or a NUL byte, which JSON's \u0000 allows): one of params (path and
// query values, by name), or a string of v, the decoded body, by its JSON path (such
// as audience[1]). "" when there is none. Without it, the store's refusal of the
// write is a 500 that the operator retries for good.
func notTextField(v reflect.Value, path string, params map[string]string) string {
	for _, name := range slices.Sorted(maps.Keys(params)) {
		if !isText(params[name]) {
			return name
		}
	}
	join := func(name string) string {
		if path == "" {
			return name
		}
		return path + "." + name
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			return notTextField(v.Elem(), path, nil)
		}
	case reflect.String:
		if !isText(v.String()) {
			return path
		}
	case reflect.Struct:
		t := v.Type()
		for i := range t.NumField() {
			f := t.Field(i)
			if !f.IsExported() {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			sub := path
			if !f.Anonymous || name != "" {
				sub = join(cmp.Or(name, f.Name))
			}
			if bad := notTextField(v.Field(i), sub, nil); bad != "" {
				return bad
			}
		}
	case reflect.Slice, reflect.Array:
		if raw, ok := v.Interface().(json.RawMessage); ok && len(raw) > 0 {
			// Kept as it is, in a jsonb column, which refuses \u0000 too.
			var decoded any
			if json.Unmarshal(raw, &decoded) != nil {
				return path
			}
			return notTextField(reflect.ValueOf(decoded), path, nil)
		}
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return "" // bytes, not text
		}
		for i := range v.Len() {
			if bad := notTextField(v.Index(i), fmt.Sprintf("%s[%d]", path, i), nil); bad != "" {
				return bad
			}
		}
	case reflect.Map:
		for _, k := range v.MapKeys() {
			if k.Kind() == reflect.String && !isText(k.String()) {
				return path
			}
			if bad := notTextField(v.MapIndex(k), join(fmt.Sprint(k.Interface())), nil); bad != "" {
				return bad
			}
		}
	}
	return ""
}
