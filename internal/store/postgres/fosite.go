package postgres

import (
	"context"
	"crypto/ecdsa"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/go-jose/go-jose/v3"
	"github.com/lib/pq"
	"github.com/ory/fosite"
	"github.com/ory/fosite/handler/oauth2"
	"github.com/ory/fosite/handler/openid"
	"github.com/ory/fosite/handler/pkce"
	fositestorage "github.com/ory/fosite/storage"

	"github.com/kubeoauth/kubeoauth/internal/store"
)

// The fosite storage interfaces the token server composes. A missing method would
// otherwise panic when fosite's compose type-asserts the store at start.
var (
	_ fosite.ClientManager                  = (*Store)(nil)
	_ oauth2.CoreStorage                    = (*Store)(nil)
	_ oauth2.TokenRevocationStorage         = (*Store)(nil)
	_ pkce.PKCERequestStorage               = (*Store)(nil)
	_ openid.OpenIDConnectRequestStorage    = (*Store)(nil)
	_ fositestorage.Transactional           = (*Store)(nil)
	_ fosite.ClientWithSecretRotation       = (*Client)(nil)
	_ fosite.OpenIDConnectClient            = (*Client)(nil)
	_ fosite.ClientWithCustomTokenLifespans = (*Client)(nil)
)

// Token kinds (tokens.kind).
const (
	kindAuthorizeCode = "authorize_code"
	kindAccessToken   = "access_token"
	kindRefreshToken  = "refresh_token"
	kindPKCE          = "pkce"
	kindOIDC          = "oidc"
)

// GrantIDCarrier is implemented by sessions that belong to a consent grant; the store
// records the grant on each token so that revoking the grant finds its tokens.
type GrantIDCarrier interface{ GetGrantID() string }

// GrantExpiryCarrier is implemented by sessions that know when their grant expires;
// the store never lets a token of theirs outlive it (see clampToGrant).
type GrantExpiryCarrier interface{ GetGrantExpiresAt() time.Time }

// GrantStandingCarrier is implemented by sessions that take the grant's state as the
// store read it with their token (the grant exists and has not expired; its expiry),
// so that whoever handles the request need not read the grant again.
type GrantStandingCarrier interface{ SetGrantStanding(expiresAt time.Time) }

// clampToGrant shortens every expiry of sess to its grant's, so that no code, access
// or refresh token issued under a grant is valid past the grant. An expiry not set
// stays unset: fosite sets it later on a session it reads back from a code, and a
// value stored here would override its own (a token valid until the grant's expiry
// instead of for its lifespan); lookups check the grant anyway.
func clampToGrant(sess fosite.Session) {
	g, ok := sess.(GrantExpiryCarrier)
	if !ok || g.GetGrantExpiresAt().IsZero() {
		return
	}
	limit := g.GetGrantExpiresAt().UTC()
	for _, tt := range []fosite.TokenType{fosite.AccessToken, fosite.RefreshToken, fosite.AuthorizeCode} {
		if exp := sess.GetExpiresAt(tt); !exp.IsZero() && exp.After(limit) {
			sess.SetExpiresAt(tt, limit)
		}
	}
}

// Client adapts a stored client to fosite.
type Client struct {
	*store.Client
	now time.Time
}

// GetID implements fosite.Client.
func (c *Client) GetID() string { return c.ID }

// GetHashedSecret implements fosite.Client.
func (c *Client) GetHashedSecret() []byte { return c.SecretHash }

// GetRotatedHashes implements fosite.ClientWithSecretRotation: the previous secret
// works until its overlap ends.
func (c *Client) GetRotatedHashes() [][]byte {
	if len(c.PreviousSecretHash) > 0 && c.now.Before(c.PreviousSecretExpiresAt) {
		return [][]byte{c.PreviousSecretHash}
	}
	return nil
}

// GetRedirectURIs implements fosite.Client.
func (c *Client) GetRedirectURIs() []string { return c.RedirectURIs }

// GetGrantTypes implements fosite.Client.
func (c *Client) GetGrantTypes() fosite.Arguments { return c.GrantTypes }

// GetResponseTypes implements fosite.Client; unset means code.
func (c *Client) GetResponseTypes() fosite.Arguments {
	if len(c.ResponseTypes) == 0 {
		return fosite.Arguments{"code"}
	}
	return c.ResponseTypes
}

// GetScopes implements fosite.Client.
func (c *Client) GetScopes() fosite.Arguments { return c.Scopes }

// IsPublic implements fosite.Client.
func (c *Client) IsPublic() bool { return c.Public() }

// GetAudience implements fosite.Client.
func (c *Client) GetAudience() fosite.Arguments { return c.Audience }

// GetRequestURIs implements fosite.OpenIDConnectClient.
func (c *Client) GetRequestURIs() []string { return nil }

// GetJSONWebKeys implements fosite.OpenIDConnectClient.
func (c *Client) GetJSONWebKeys() *jose.JSONWebKeySet {
	if len(c.JWKS) == 0 {
		return nil
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(c.JWKS, &set); err != nil {
		return nil
	}
	return &set
}

// GetJSONWebKeysURI implements fosite.OpenIDConnectClient.
func (c *Client) GetJSONWebKeysURI() string { return c.JWKSURI }

// GetRequestObjectSigningAlgorithm implements fosite.OpenIDConnectClient.
func (c *Client) GetRequestObjectSigningAlgorithm() string { return "" }

// GetTokenEndpointAuthMethod implements fosite.OpenIDConnectClient.
func (c *Client) GetTokenEndpointAuthMethod() string { return c.TokenEndpointAuthMethod }

// GetTokenEndpointAuthSigningAlgorithm implements fosite.OpenIDConnectClient: the
// algorithm private_key_jwt assertions must use, from the client's first key (its
// "alg", else its type); RS256, OpenID Connect's default, without keys here.
func (c *Client) GetTokenEndpointAuthSigningAlgorithm() string {
	if set := c.GetJSONWebKeys(); set != nil && len(set.Keys) > 0 {
		k := set.Keys[0]
		if k.Algorithm != "" {
			return k.Algorithm
		}
		if _, ok := k.Key.(*ecdsa.PublicKey); ok {
			return "ES256"
		}
	}
	return "RS256"
}

// GetEffectiveLifespan implements fosite.ClientWithCustomTokenLifespans.
func (c *Client) GetEffectiveLifespan(_ fosite.GrantType, tt fosite.TokenType, fallback time.Duration) time.Duration {
	key := map[fosite.TokenType]string{fosite.AccessToken: "accessToken", fosite.RefreshToken: "refreshToken",
		fosite.IDToken: "idToken", fosite.AuthorizeCode: "authorizationCode"}[tt]
	if d, err := time.ParseDuration(c.TokenLifespans[key]); err == nil && d > 0 {
		return d
	}
	return fallback
}

// GetClient implements fosite.ClientManager.
func (s *Store) GetClient(ctx context.Context, id string) (fosite.Client, error) {
	c, err := s.GetClientByID(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fosite.ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &Client{Client: c, now: s.now()}, nil
}

// ClientAssertionJWTValid implements fosite.ClientManager: a JWT ID seen before and not
// yet expired is a replay.
func (s *Store) ClientAssertionJWTValid(ctx context.Context, jti string) error {
	var exp time.Time
	err := s.q(ctx).QueryRowContext(ctx, `SELECT expires_at FROM client_assertion_jtis WHERE jti = $1`, jti).Scan(&exp)
	if errors.Is(err, sql.ErrNoRows) || err == nil && !exp.After(s.now()) {
		return nil
	}
	if err != nil {
		return s.mapErr(ctx, err)
	}
	return fosite.ErrJTIKnown
}

// SetClientAssertionJWT implements fosite.ClientManager.
func (s *Store) SetClientAssertionJWT(ctx context.Context, jti string, exp time.Time) error {
	res, err := s.q(ctx).ExecContext(ctx, `INSERT INTO client_assertion_jtis (jti, expires_at) VALUES ($1, $2)
ON CONFLICT (jti) DO UPDATE SET expires_at = EXCLUDED.expires_at WHERE client_assertion_jtis.expires_at <= now()`, jti, exp.UTC())
	if err != nil {
		return s.mapErr(ctx, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fosite.ErrJTIKnown
	}
	return nil
}

// tokenSelect reads a token with its grant: whether the grant still exists and when it
// expires, so that a token is refused once its grant is gone or expired even before
// the janitor revokes it. tokenInsert writes a token. Both are built once, naming
// requested_at, except in a test build that renames that column
// (SetTokenRequestedAtColumn, before any store opens).
var tokenSelect, tokenInsert = tokenQueries("requested_at")

// tokenQueries are tokenSelect and tokenInsert with requestedAt as the name of the
// column that holds fosite's RequestedAt.
//
// #nosec G101 -- column names, not a credential
func tokenQueries(requestedAt string) (sel, ins string) {
	sel = `SELECT t.request_id, t.client_id, t.grant_id, t.active, t.rotated_at, t.` + requestedAt + `, t.requested_scopes,
    t.granted_scopes, t.requested_audience, t.granted_audience, t.form, t.session, g.id IS NOT NULL, g.expires_at
FROM tokens t LEFT JOIN consent_grants g ON g.id = t.grant_id WHERE t.kind = $1 AND t.signature = $2`
	ins = `
INSERT INTO tokens (kind, signature, request_id, client_id, subject, grant_id, access_signature, ` + requestedAt + `, expires_at,
    requested_scopes, granted_scopes, requested_audience, granted_audience, form, session)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)`
	return sel, ins
}

func (s *Store) createToken(ctx context.Context, kind, signature, accessSignature string, r fosite.Requester) error {
	sess := r.GetSession()
	clampToGrant(sess)
	session, err := json.Marshal(sess)
	if err != nil {
		return err
	}
	form, err := json.Marshal(r.GetRequestForm())
	if err != nil {
		return err
	}
	var grantID sql.NullString
	if g, ok := sess.(GrantIDCarrier); ok && g.GetGrantID() != "" {
		grantID = sql.NullString{String: g.GetGrantID(), Valid: true}
	}
	var expires sql.NullTime
	if tt, ok := tokenType[kind]; ok {
		expires = nullTime(sess.GetExpiresAt(tt))
	}
	if !expires.Valid {
		// Codes, PKCE and OIDC sessions live as long as the authorization code.
		expires = nullTime(sess.GetExpiresAt(fosite.AuthorizeCode))
	}
	var access sql.NullString
	if accessSignature != "" {
		access = sql.NullString{String: accessSignature, Valid: true}
	}
	row := tokenWrite{clientID: r.GetClient().GetID(), args: []any{
		kind, signature, r.GetID(), r.GetClient().GetID(), sess.GetSubject(), grantID, access,
		r.GetRequestedAt().UTC(), expires,
		pq.Array(nonNil(r.GetRequestedScopes())), pq.Array(nonNil(r.GetGrantedScopes())),
		pq.Array(nonNil(r.GetRequestedAudience())), pq.Array(nonNil(r.GetGrantedAudience())), string(form), string(session)}}
	if st, ok := deferring(ctx); ok {
		st.writes.tokens = append(st.writes.tokens, row)
		return nil
	}
	if !s.inTxCtx(ctx) && len(extra.tokenHooks) == 0 {
		return s.group.commit(ctx, &writeUnit{tokens: []tokenWrite{row}})
	}
	_, err = s.q(ctx).ExecContext(ctx, tokenInsert, row.args...)
	if isForeignKeyViolation(err) {
		return fmt.Errorf("%w: %s", store.ErrClientGone, r.GetClient().GetID())
	}
	if err != nil {
		return s.mapErr(ctx, err)
	}
	for _, h := range extra.tokenHooks {
		if err := h(ctx, s.q(ctx), kind, r.GetID(), r.GetClient().GetID()); err != nil {
			return s.mapErr(ctx, err)
		}
	}
	return nil
}

var tokenType = map[string]fosite.TokenType{
	kindAccessToken:   fosite.AccessToken,
	kindRefreshToken:  fosite.RefreshToken,
	kindAuthorizeCode: fosite.AuthorizeCode,
}

// tokenRow is a tokens row as read back.
type tokenRow struct {
	requestID, clientID, grantID    string
	active                          bool
	rotatedAt                       sql.NullTime
	requestedAt                     time.Time
	reqScopes, granted, reqAud, aud []string
	form, session                   []byte
	grantExists                     bool
	grantExpiresAt                  sql.NullTime
}

// grantValid reports whether the token's grant, if it has one, still stands at now.
func (r *tokenRow) grantValid(now time.Time) bool {
	return r.grantID == "" || r.grantExists && (!r.grantExpiresAt.Valid || now.Before(r.grantExpiresAt.Time))
}

// storedToken is a row made into a fosite request.
type storedToken struct {
	req       *fosite.Request
	active    bool
	rotatedAt sql.NullTime
}

func (s *Store) getToken(ctx context.Context, kind, signature string, session fosite.Session) (*storedToken, error) {
	if !storable(signature) {
		return nil, fosite.ErrNotFound
	}
	row, cached := (*tokenRow)(nil), false
	if kind == kindAccessToken && s.caching() {
		row, cached = s.tokens.get(signature, s.now())
	}
	if !cached {
		gen := s.tokens.generation()
		var grantID sql.NullString
		row = &tokenRow{}
		err := s.queryRow(ctx, tokenSelect, kind, signature).
			Scan(&row.requestID, &row.clientID, &grantID, &row.active, &row.rotatedAt, &row.requestedAt, pq.Array(&row.reqScopes),
				pq.Array(&row.granted), pq.Array(&row.reqAud), pq.Array(&row.aud), &row.form, &row.session,
				&row.grantExists, &row.grantExpiresAt)
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fosite.ErrNotFound
		}
		if err != nil {
			return nil, s.mapErr(ctx, err)
		}
		row.grantID = grantID.String
		if s.testHooks.afterTokenRead != nil && kind == kindAccessToken {
			s.testHooks.afterTokenRead(signature)
		}
		if kind == kindAccessToken && row.active && !s.inTxCtx(ctx) && s.caching() {
			s.tokens.put(signature, row, s.now(), gen)
		}
	}
	if !row.grantValid(s.now()) {
		// Expired or revoked grant: the token is as good as revoked (the janitor
		// deletes it shortly), not inactive, which would look like refresh reuse.
		return nil, fosite.ErrNotFound
	}
	if c, ok := session.(GrantStandingCarrier); ok && row.grantID != "" && !cached {
		c.SetGrantStanding(row.grantExpiresAt.Time)
	}
	client, err := s.GetClient(ctx, row.clientID)
	if err != nil {
		return nil, err // a deleted client's tokens are gone with it
	}
	req := fosite.NewRequest()
	req.ID, req.RequestedAt, req.Client = row.requestID, row.requestedAt, client
	req.RequestedScope, req.GrantedScope = row.reqScopes, row.granted
	req.RequestedAudience, req.GrantedAudience = row.reqAud, row.aud
	req.Form = url.Values{}
	if err := json.Unmarshal(row.form, &req.Form); err != nil {
		return nil, err
	}
	if session != nil {
		if err := json.Unmarshal(row.session, session); err != nil {
			return nil, err
		}
	}
	req.Session = session
	return &storedToken{req: req, active: row.active, rotatedAt: row.rotatedAt}, nil
}

func (s *Store) deleteToken(ctx context.Context, kind, signature string) error {
	q := s.q(ctx)
	if _, err := q.ExecContext(ctx, `DELETE FROM tokens WHERE kind = $1 AND signature = $2`, kind, signature); err != nil {
		return s.mapErr(ctx, err)
	}
	if kind == kindAccessToken {
		return s.tokensGone(ctx, q, Invalidation{Signature: signature})
	}
	return nil
}

// CreateAuthorizeCodeSession implements oauth2.AuthorizeCodeStorage.
func (s *Store) CreateAuthorizeCodeSession(ctx context.Context, code string, r fosite.Requester) error {
	return s.createToken(ctx, kindAuthorizeCode, code, "", r)
}

// GetAuthorizeCodeSession implements oauth2.AuthorizeCodeStorage.
func (s *Store) GetAuthorizeCodeSession(ctx context.Context, code string, session fosite.Session) (fosite.Requester, error) {
	t, err := s.getToken(ctx, kindAuthorizeCode, code, session)
	if err != nil {
		return nil, err
	}
	if !t.active {
		return t.req, fosite.ErrInvalidatedAuthorizeCode
	}
	return t.req, nil
}

// InvalidateAuthorizeCodeSession implements oauth2.AuthorizeCodeStorage. The row stays
// (inactive) so that a second use is recognised and revokes what the first issued.
//
// fosite reads the code before its transaction, so two concurrent exchanges both see
// it active; only the UPDATE decides. Under READ COMMITTED the second one's UPDATE
// waits for the first's row lock and then re-checks "active" on the committed row,
// so exactly one invalidates the code. The other gets ErrInvalidatedAuthorizeCode,
// for which the provider answers invalid_grant and revokes what the code issued
// (RFC 6749 section 4.1.2), as fosite does when the read finds the code used.
func (s *Store) InvalidateAuthorizeCodeSession(ctx context.Context, code string) error {
	res, err := s.q(ctx).ExecContext(ctx, `UPDATE tokens SET active = false WHERE kind = $1 AND signature = $2 AND active`,
		kindAuthorizeCode, code)
	if err != nil {
		return s.mapErr(ctx, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return s.mapErr(ctx, err)
	}
	if n == 0 {
		return fosite.ErrInvalidatedAuthorizeCode
	}
	return nil
}

// CreateAccessTokenSession implements oauth2.AccessTokenStorage.
func (s *Store) CreateAccessTokenSession(ctx context.Context, signature string, r fosite.Requester) error {
	return s.createToken(ctx, kindAccessToken, signature, "", r)
}

// GetAccessTokenSession implements oauth2.AccessTokenStorage.
func (s *Store) GetAccessTokenSession(ctx context.Context, signature string, session fosite.Session) (fosite.Requester, error) {
	t, err := s.getToken(ctx, kindAccessToken, signature, session)
	if err != nil {
		return nil, err
	}
	if !t.active {
		return t.req, fosite.ErrInactiveToken
	}
	return t.req, nil
}

// DeleteAccessTokenSession implements oauth2.AccessTokenStorage.
func (s *Store) DeleteAccessTokenSession(ctx context.Context, signature string) error {
	return s.deleteToken(ctx, kindAccessToken, signature)
}

// CreateRefreshTokenSession implements oauth2.RefreshTokenStorage.
func (s *Store) CreateRefreshTokenSession(ctx context.Context, signature, accessSignature string, r fosite.Requester) error {
	return s.createToken(ctx, kindRefreshToken, signature, accessSignature, r)
}

// GetRefreshTokenSession implements oauth2.RefreshTokenStorage. A rotated refresh
// token still works during the grace period (a client whose response was lost may
// retry with it); after that it is inactive, and fosite revokes the whole chain.
func (s *Store) GetRefreshTokenSession(ctx context.Context, signature string, session fosite.Session) (fosite.Requester, error) {
	t, err := s.getToken(ctx, kindRefreshToken, signature, session)
	if err != nil {
		return nil, err
	}
	if t.active {
		return t.req, nil
	}
	if t.rotatedAt.Valid && s.now().Before(t.rotatedAt.Time.Add(s.opts.RefreshGracePeriod)) {
		if h := s.opts.Hooks.RefreshGraceUse; h != nil {
			h()
		}
		return t.req, nil
	}
	if h := s.opts.Hooks.ChainRevoked; h != nil {
		h()
	}
	return t.req, fosite.ErrInactiveToken
}

// DeleteRefreshTokenSession implements oauth2.RefreshTokenStorage.
func (s *Store) DeleteRefreshTokenSession(ctx context.Context, signature string) error {
	return s.deleteToken(ctx, kindRefreshToken, signature)
}

// RotateRefreshToken implements oauth2.RefreshTokenStorage: the used refresh token
// becomes inactive (remembering when, for the grace period) and the access token issued
// with it is revoked. A token already rotated keeps its first rotation time, so the
// grace period is never extended by using it again.
//
// In fosite's transaction the rotation waits for the commit, written with the new
// tokens by the group commit (flushUnits) in the same way.
func (s *Store) RotateRefreshToken(ctx context.Context, _ string, signature string) error {
	if st, ok := deferring(ctx); ok {
		st.writes.rotations = append(st.writes.rotations, signature)
		return nil
	}
	return s.inTx(ctx, func(ctx context.Context, q querier) error { return s.rotate(ctx, q, signature) })
}

func (s *Store) rotate(ctx context.Context, q querier, signature string) error {
	// Unconditional on rotated_at, so that after waiting for a concurrent revocation's
	// lock the UPDATE re-reads the row and finds it gone: a refresh token revoked
	// after fosite read it must not yield a new pair. rotated_at keeps the first
	// rotation's time, so a grace-period reuse never extends the grace period.
	var access sql.NullString
	var first bool
	err := q.QueryRowContext(ctx, `UPDATE tokens SET active = false, rotated_at = coalesce(rotated_at, $3)
WHERE kind = $1 AND signature = $2 RETURNING access_signature, rotated_at = $3`,
		kindRefreshToken, signature, s.now()).Scan(&access, &first)
	if errors.Is(err, sql.ErrNoRows) {
		return errRefreshRevoked
	}
	if err != nil || !first || !access.Valid {
		return err // !first: rotated before, a grace-period reuse; its access token went then
	}
	if _, err = q.ExecContext(ctx, `DELETE FROM tokens WHERE kind = $1 AND signature = $2`, kindAccessToken, access.String); err != nil {
		return err
	}
	return s.tokensGone(ctx, q, Invalidation{Signature: access.String})
}

// errRefreshRevoked fails a rotation whose refresh token is gone (revoked, its grant
// or client deleted) by the time the rotation is written. fosite answers ErrNotFound
// with an error and rolls back, so the new pair is never stored.
var errRefreshRevoked = fmt.Errorf("%w: the refresh token was revoked", fosite.ErrNotFound)

// RevokeRefreshToken implements oauth2.TokenRevocationStorage: every refresh token of
// the authorization goes.
func (s *Store) RevokeRefreshToken(ctx context.Context, requestID string) error {
	return s.revokeRequest(ctx, kindRefreshToken, requestID)
}

// RevokeAccessToken implements oauth2.TokenRevocationStorage.
func (s *Store) RevokeAccessToken(ctx context.Context, requestID string) error {
	return s.revokeRequest(ctx, kindAccessToken, requestID)
}

// revokeRequest deletes the authorization's tokens of kind. A refresh whose rotation
// is being written when the revocation starts holds the used refresh token's row: the
// DELETE waits for it, deletes that row, but (READ COMMITTED) not the new pair the
// rotation committed meanwhile, which its snapshot predates. So the DELETE is repeated,
// each time with a new snapshot, until one finds nothing. That ends the race: every
// new pair of the chain comes from rotating a refresh token of the chain, which a
// DELETE either saw (and waited for its rotation, so the next DELETE sees the pair)
// or already deleted and keeps locked until this transaction ends, so that rotation
// finds its token gone and fails (see rotate). Locking the chain first (SELECT … FOR
// UPDATE) would not do: it cannot lock rows its snapshot does not yet see.
func (s *Store) revokeRequest(ctx context.Context, kind, requestID string) error {
	return s.inTx(ctx, func(ctx context.Context, q querier) error {
		var clientID, subject string
		found := false
		for {
			var c, sub string
			err := q.QueryRowContext(ctx, `WITH gone AS (DELETE FROM tokens WHERE kind = $1 AND request_id = $2 RETURNING client_id, subject)
SELECT client_id, subject FROM gone LIMIT 1`, kind, requestID).Scan(&c, &sub)
			if errors.Is(err, sql.ErrNoRows) {
				break
			}
			if err != nil {
				return err
			}
			if !found {
				clientID, subject, found = c, sub, true
			}
		}
		if !found {
			return nil
		}
		if err := s.tokensGone(ctx, q, Invalidation{RequestID: requestID}); err != nil {
			return err
		}
		return s.appendEvent(ctx, q, store.Event{Kind: store.EventTokenRevoked, ClientID: clientID, Subject: subject, RequestID: requestID})
	})
}

// CreatePKCERequestSession implements pkce.PKCERequestStorage.
func (s *Store) CreatePKCERequestSession(ctx context.Context, signature string, r fosite.Requester) error {
	return s.createToken(ctx, kindPKCE, signature, "", r)
}

// GetPKCERequestSession implements pkce.PKCERequestStorage.
func (s *Store) GetPKCERequestSession(ctx context.Context, signature string, session fosite.Session) (fosite.Requester, error) {
	t, err := s.getToken(ctx, kindPKCE, signature, session)
	if err != nil {
		return nil, err
	}
	return t.req, nil
}

// DeletePKCERequestSession implements pkce.PKCERequestStorage.
func (s *Store) DeletePKCERequestSession(ctx context.Context, signature string) error {
	return s.deleteToken(ctx, kindPKCE, signature)
}

// CreateOpenIDConnectSession implements openid.OpenIDConnectRequestStorage.
func (s *Store) CreateOpenIDConnectSession(ctx context.Context, code string, r fosite.Requester) error {
	return s.createToken(ctx, kindOIDC, code, "", r)
}

// GetOpenIDConnectSession implements openid.OpenIDConnectRequestStorage.
func (s *Store) GetOpenIDConnectSession(ctx context.Context, code string, r fosite.Requester) (fosite.Requester, error) {
	t, err := s.getToken(ctx, kindOIDC, code, r.GetSession())
	if errors.Is(err, fosite.ErrNotFound) {
		return nil, openid.ErrNoSessionFound
	}
	if err != nil {
		return nil, err
	}
	return t.req, nil
}

// DeleteOpenIDConnectSession implements openid.OpenIDConnectRequestStorage.
func (s *Store) DeleteOpenIDConnectSession(ctx context.Context, code string) error {
	return s.deleteToken(ctx, kindOIDC, code)
}

// BeginTX implements fosite's storage.Transactional: fosite wraps refresh-token
// rotation and the tokens it issues in one transaction. It begins none in the
// database yet (see txState).
func (s *Store) BeginTX(ctx context.Context) (context.Context, error) {
	return context.WithValue(ctx, txKey{}, &txState{writes: &writeUnit{}}), nil
}

// Commit implements storage.Transactional.
func (s *Store) Commit(ctx context.Context) error {
	st, ok := txFrom(ctx)
	if !ok {
		return errors.New("commit without a transaction")
	}
	if st.err != nil {
		return st.err
	}
	if st.tx == nil {
		writes := st.writes
		st.writes, st.err, st.ended = nil, sql.ErrTxDone, txCommitted
		if !writes.empty() {
			if err := s.group.commit(ctx, writes); err != nil {
				st.ended = txCommitFailed
				return err
			}
		}
		for _, f := range st.after {
			f()
		}
		return nil
	}
	return s.commit(st)
}

// Rollback implements storage.Transactional.
func (s *Store) Rollback(ctx context.Context) error {
	st, ok := txFrom(ctx)
	if !ok {
		return errors.New("rollback without a transaction")
	}
	if st.tx == nil {
		switch st.ended {
		case txCommitted, txRolledBack:
			return sql.ErrTxDone
		case txCommitFailed:
			// Nothing to undo, and fosite rolls back after a failed Commit: an error
			// here would replace the Commit's in its answer.
			return nil
		}
		st.writes, st.err, st.ended = nil, sql.ErrTxDone, txRolledBack
		return nil // nothing was written
	}
	return s.mapErr(ctx, s.rollback(st))
}

func nonNil(a fosite.Arguments) []string {
	if a == nil {
		return []string{}
	}
	return a
}
