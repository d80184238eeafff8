package postgres

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/lib/pq"
	"github.com/ory/fosite"

	"github.com/kubeoauth/kubeoauth/internal/store"
)

var _ fosite.PARStorage = (*Store)(nil)

// kindPAR is a pushed authorization request (RFC 9126): its signature is the
// request_uri handed to the client.
const kindPAR = "par"

// parState is what a pushed request holds besides its form: what fosite resolved when
// it was pushed (the redirect URI chosen among the client's when none was sent, the
// response mode) and hands back, by GetPARSession, in place of the form's.
type parState struct {
	RedirectURI         string    `json:"redirect_uri"`
	ResponseTypes       []string  `json:"response_types"`
	State               string    `json:"state"`
	ResponseMode        string    `json:"response_mode"`
	DefaultResponseMode string    `json:"default_response_mode"`
	ExpiresAt           time.Time `json:"expires_at"`
}

// CreatePARSession implements fosite.PARStorage. The row lives in tokens, so that the
// janitor sweeps it at expires_at and it goes with its client.
func (s *Store) CreatePARSession(ctx context.Context, requestURI string, r fosite.AuthorizeRequester) error {
	var exp time.Time
	if sess := r.GetSession(); sess != nil {
		exp = sess.GetExpiresAt(fosite.PushedAuthorizeRequestContext)
	}
	if exp.IsZero() {
		return errors.New("a pushed authorization request needs an expiry")
	}
	st := parState{ResponseTypes: nonNil(r.GetResponseTypes()), State: r.GetState(),
		ResponseMode: string(r.GetResponseMode()), DefaultResponseMode: string(r.GetDefaultResponseMode()), ExpiresAt: exp.UTC()}
	if u := r.GetRedirectURI(); u != nil {
		st.RedirectURI = u.String()
	}
	state, err := json.Marshal(st)
	if err != nil {
		return err
	}
	// The client's credentials were checked at the endpoint and are no part of the
	// request: they are not kept.
	f := url.Values{}
	for k, v := range r.GetRequestForm() {
		if k != "client_secret" && k != "client_assertion" && k != "client_assertion_type" {
			f[k] = v
		}
	}
	form, err := json.Marshal(f)
	if err != nil {
		return err
	}
	_, err = s.q(ctx).ExecContext(ctx, tokenInsert,
		kindPAR, requestURI, r.GetID(), r.GetClient().GetID(), "", nil, nil,
		r.GetRequestedAt().UTC(), exp.UTC(),
		pq.Array(nonNil(r.GetRequestedScopes())), pq.Array([]string{}),
		pq.Array(nonNil(r.GetRequestedAudience())), pq.Array([]string{}), string(form), string(state))
	if isForeignKeyViolation(err) {
		return fmt.Errorf("%w: %s", store.ErrClientGone, r.GetClient().GetID())
	}
	return s.mapErr(ctx, err)
}

// parSelect reads a pushed request; built like tokenSelect, with the name of the
// column that holds RequestedAt (SetTokenRequestedAtColumn).
var parSelect = parQuery("requested_at")

func parQuery(requestedAt string) string {
	return `SELECT request_id, client_id, ` + requestedAt + `, expires_at, requested_scopes,
    requested_audience, form, session FROM tokens WHERE kind = $1 AND signature = $2`
}

// GetPARSession implements fosite.PARStorage. An expired request is not found: fosite
// does not check the expiry itself, and the janitor may not have swept it yet.
func (s *Store) GetPARSession(ctx context.Context, requestURI string) (fosite.AuthorizeRequester, error) {
	var (
		id, clientID string
		at, exp      time.Time
		scopes, aud  []string
		form, state  []byte
	)
	if !storable(requestURI) {
		return nil, fosite.ErrNotFound
	}
	err := s.q(ctx).QueryRowContext(ctx, parSelect, kindPAR, requestURI).
		Scan(&id, &clientID, &at, &exp, pq.Array(&scopes), pq.Array(&aud), &form, &state)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fosite.ErrNotFound
	}
	if err != nil {
		return nil, s.mapErr(ctx, err)
	}
	if !s.now().Before(exp) {
		return nil, fosite.ErrNotFound
	}
	client, err := s.GetClient(ctx, clientID)
	if err != nil {
		return nil, err
	}
	var st parState
	if err := json.Unmarshal(state, &st); err != nil {
		return nil, err
	}
	ar := fosite.NewAuthorizeRequest()
	ar.ID, ar.RequestedAt, ar.Client = id, at, client
	ar.RequestedScope, ar.RequestedAudience = scopes, aud
	ar.Form = url.Values{}
	if err := json.Unmarshal(form, &ar.Form); err != nil {
		return nil, err
	}
	if st.RedirectURI != "" {
		if ar.RedirectURI, err = url.Parse(st.RedirectURI); err != nil {
			return nil, err
		}
	}
	ar.ResponseTypes, ar.State = st.ResponseTypes, st.State
	ar.ResponseMode, ar.DefaultResponseMode = fosite.ResponseModeType(st.ResponseMode), fosite.ResponseModeType(st.DefaultResponseMode)
	sess := &fosite.DefaultSession{}
	sess.SetExpiresAt(fosite.PushedAuthorizeRequestContext, st.ExpiresAt)
	ar.Session = sess
	return ar, nil
}

// DeletePARSession implements fosite.PARStorage.
func (s *Store) DeletePARSession(ctx context.Context, requestURI string) error {
	return s.deleteToken(ctx, kindPAR, requestURI)
}
