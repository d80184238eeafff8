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

// Token kinds of the device authorization grant (RFC 8628). A device authorization is
// two rows: the device code's, keyed by the code's HMAC signature as other codes are,
// which holds the request and its state; and the user code's, keyed by the user code's
// HMAC, whose access_signature names the device code's row (as a refresh token's names
// its access token). The user code's row goes once the user decides, so a code can be
// entered once; the device code's once tokens are issued for it, so it is used once.
// Both live in tokens: the janitor sweeps them at expires_at, and they go with their
// client.
const (
	kindDeviceCode = "device_code"
	kindUserCode   = "device_user_code"
	// deviceExpiredKept is how long an expired device code's row is kept (see
	// deviceState.ExpiresAt).
	deviceExpiredKept = time.Hour
)

// Device authorization states.
const (
	devicePending  = "pending"
	deviceApproved = "approved"
	deviceDenied   = "denied"
)

// deviceState is what the device code's row holds in its session column: the user's
// decision, the polling interval the device must keep and when it last polled, and,
// once approved, the session the tokens are issued with.
type deviceState struct {
	Status string `json:"status"`
	// ExpiresAt is the codes' expiry; the row's expires_at is later by
	// deviceExpiredKept, so that a device polling past the expiry is told
	// expired_token, not invalid_grant as for a code never issued.
	ExpiresAt time.Time       `json:"expires_at"`
	Interval  int             `json:"interval"` // seconds
	LastPoll  time.Time       `json:"last_poll,omitzero"`
	Session   json.RawMessage `json:"session,omitempty"`
}

// CreateDeviceCodeSession stores a new device authorization, pending, that expires at
// exp; the device may poll every interval seconds. store.ErrUserCodeTaken: a pending
// authorization holds the same user code.
func (s *Store) CreateDeviceCodeSession(ctx context.Context, deviceSignature, userSignature string, interval int,
	exp time.Time, r fosite.Requester) error {
	state, err := json.Marshal(deviceState{Status: devicePending, Interval: interval, ExpiresAt: exp.UTC()})
	if err != nil {
		return err
	}
	form, err := json.Marshal(credentialFree(r.GetRequestForm()))
	if err != nil {
		return err
	}
	err = s.inTx(ctx, func(ctx context.Context, q querier) error {
		if _, err := q.ExecContext(ctx, tokenInsert, kindDeviceCode, deviceSignature, r.GetID(), r.GetClient().GetID(), "", nil, nil,
			r.GetRequestedAt().UTC(), exp.UTC().Add(deviceExpiredKept), pq.Array(nonNil(r.GetRequestedScopes())), pq.Array([]string{}),
			pq.Array(nonNil(r.GetRequestedAudience())), pq.Array([]string{}), string(form), string(state)); err != nil {
			return err
		}
		_, err := q.ExecContext(ctx, tokenInsert, kindUserCode, userSignature, r.GetID(), r.GetClient().GetID(), "", nil, deviceSignature,
			r.GetRequestedAt().UTC(), exp.UTC(), pq.Array([]string{}), pq.Array([]string{}), pq.Array([]string{}), pq.Array([]string{}), "{}", "{}")
		return err
	})
	var pqErr *pq.Error
	switch {
	case errors.As(err, &pqErr) && pqErr.Code == "23505":
		return store.ErrUserCodeTaken
	case isForeignKeyViolation(err):
		return fmt.Errorf("%w: %s", store.ErrClientGone, r.GetClient().GetID())
	}
	return err
}

// credentialFree is a request form without the client's credentials, which were
// checked at the endpoint and are no part of the request.
func credentialFree(form url.Values) url.Values {
	f := url.Values{}
	for k, v := range form {
		if k != "client_secret" && k != "client_assertion" && k != "client_assertion_type" {
			f[k] = v
		}
	}
	return f
}

// deviceSelect reads a device code's row; the name of the column that holds
// RequestedAt follows tokenSelect's (SetTokenRequestedAtColumn).
var deviceSelect = deviceQuery("requested_at")

func deviceQuery(requestedAt string) string {
	return `SELECT signature, request_id, client_id, ` + requestedAt + `, expires_at, requested_scopes, granted_scopes,
    requested_audience, granted_audience, form, session FROM tokens WHERE kind = '` + kindDeviceCode + `' `
}

// readDevice reads the device code's row that where selects (with its arguments), in
// q, and its state.
func (s *Store) readDevice(ctx context.Context, q querier, where string,
	args ...any) (*fosite.Request, string, time.Time, *deviceState, error) {
	var (
		sig, id, clientID          string
		at, exp                    time.Time
		scopes, granted, aud, gaud []string
		form, state                []byte
	)
	err := q.QueryRowContext(ctx, deviceSelect+where, args...).
		Scan(&sig, &id, &clientID, &at, &exp, pq.Array(&scopes), pq.Array(&granted), pq.Array(&aud), pq.Array(&gaud), &form, &state)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, "", time.Time{}, nil, fosite.ErrNotFound
	}
	if err != nil {
		return nil, "", time.Time{}, nil, err
	}
	client, err := s.GetClient(ctx, clientID)
	if err != nil {
		return nil, "", time.Time{}, nil, err
	}
	req := fosite.NewRequest()
	req.ID, req.RequestedAt, req.Client = id, at, client
	req.RequestedScope, req.GrantedScope, req.RequestedAudience, req.GrantedAudience = scopes, granted, aud, gaud
	req.Form = url.Values{}
	if err := json.Unmarshal(form, &req.Form); err != nil {
		return nil, "", time.Time{}, nil, err
	}
	var st deviceState
	if err := json.Unmarshal(state, &st); err != nil {
		return nil, "", time.Time{}, nil, err
	}
	if !st.ExpiresAt.IsZero() {
		exp = st.ExpiresAt
	}
	return req, sig, exp, &st, nil
}

// GetDeviceCodeSessionByUserCode reads the pending device authorization whose user
// code has the signature userSignature: what the user-code page shows the user. Any
// other (decided, expired, unknown) is fosite.ErrNotFound.
func (s *Store) GetDeviceCodeSessionByUserCode(ctx context.Context, userSignature string) (fosite.Requester, error) {
	req, _, exp, st, err := s.readDevice(ctx, s.q(ctx), `AND signature = (SELECT access_signature FROM tokens
WHERE kind = '`+kindUserCode+`' AND signature = $1)`, userSignature)
	if err != nil {
		return nil, s.mapErr(ctx, err)
	}
	if st.Status != devicePending || !s.now().Before(exp) {
		return nil, fosite.ErrNotFound
	}
	return req, nil
}

// DecideDeviceCode records the user's decision on the pending device authorization
// whose user code has the signature userSignature: approved, with r's subject, consent
// grant, granted scopes and session, or denied when r is nil. The user code is spent
// either way. fosite.ErrNotFound: no such pending authorization (decided meanwhile,
// expired, or unknown).
func (s *Store) DecideDeviceCode(ctx context.Context, userSignature string, r fosite.Requester) error {
	return s.inTx(ctx, func(ctx context.Context, q querier) error {
		var deviceSig sql.NullString
		err := q.QueryRowContext(ctx, `DELETE FROM tokens WHERE kind = $1 AND signature = $2 RETURNING access_signature`,
			kindUserCode, userSignature).Scan(&deviceSig)
		if errors.Is(err, sql.ErrNoRows) {
			return fosite.ErrNotFound
		}
		if err != nil {
			return err
		}
		_, sig, exp, st, err := s.readDevice(ctx, q, `AND signature = $1 FOR UPDATE`, deviceSig.String)
		if err != nil {
			return err
		}
		if st.Status != devicePending || !s.now().Before(exp) {
			return fosite.ErrNotFound
		}
		var subject string
		var grantID sql.NullString
		granted, aud := []string{}, []string{}
		st.Status = deviceDenied
		if r != nil {
			sess := r.GetSession()
			clampToGrant(sess)
			if st.Session, err = json.Marshal(sess); err != nil {
				return err
			}
			st.Status, subject = deviceApproved, sess.GetSubject()
			if g, ok := sess.(GrantIDCarrier); ok && g.GetGrantID() != "" {
				grantID = sql.NullString{String: g.GetGrantID(), Valid: true}
			}
			granted, aud = nonNil(r.GetGrantedScopes()), nonNil(r.GetGrantedAudience())
		}
		state, err := json.Marshal(st)
		if err != nil {
			return err
		}
		_, err = q.ExecContext(ctx, `UPDATE tokens SET session = $3, subject = $4, grant_id = $5, granted_scopes = $6,
    granted_audience = $7 WHERE kind = $1 AND signature = $2`,
			kindDeviceCode, sig, string(state), subject, grantID, pq.Array(granted), pq.Array(aud))
		return err
	})
}

// PollDeviceCode is a device's poll with the device code whose signature is
// deviceSignature, by clientID (RFC 8628 section 3.4). It returns the approved request with its
// session read into session; or store.ErrDevicePending, ErrDeviceSlowDown (the
// interval grew), ErrDeviceDenied, ErrDeviceExpired; or fosite.ErrNotFound (unknown,
// already used, or another client's). Every poll is recorded under the row's lock, so that a device
// polling several replicas at once is slowed down all the same. slack is how much
// sooner than the interval a poll may come, for the network's jitter.
func (s *Store) PollDeviceCode(ctx context.Context, deviceSignature, clientID string, session fosite.Session,
	slack time.Duration) (fosite.Requester, error) {
	var (
		out    *fosite.Request
		answer error
	)
	err := s.inTx(ctx, func(ctx context.Context, q querier) error {
		req, _, exp, st, err := s.readDevice(ctx, q, `AND signature = $1 FOR UPDATE`, deviceSignature)
		if err != nil {
			return err
		}
		if req.GetClient().GetID() != clientID {
			return fosite.ErrNotFound // another client's code: its poll must not slow the device down
		}
		now := s.now()
		if !now.Before(exp) {
			answer = store.ErrDeviceExpired
			return nil
		}
		interval := time.Duration(st.Interval) * time.Second
		if !st.LastPoll.IsZero() && now.Sub(st.LastPoll) < interval-slack {
			st.Interval += store.DeviceSlowDownStep
			answer = store.ErrDeviceSlowDown
		}
		st.LastPoll = now
		state, err := json.Marshal(st)
		if err != nil {
			return err
		}
		if _, err := q.ExecContext(ctx, `UPDATE tokens SET session = $3 WHERE kind = $1 AND signature = $2`,
			kindDeviceCode, deviceSignature, string(state)); err != nil {
			return err
		}
		switch {
		case answer != nil:
		case st.Status == devicePending:
			answer = store.ErrDevicePending
		case st.Status == deviceDenied:
			answer = store.ErrDeviceDenied
		default:
			if err := json.Unmarshal(st.Session, session); err != nil {
				return err
			}
			req.Session, out = session, req
		}
		return nil
	})
	if errors.Is(err, fosite.ErrNotFound) {
		return nil, err
	}
	if err != nil {
		return nil, s.mapErr(ctx, err)
	}
	if answer != nil {
		return nil, answer
	}
	return out, nil
}

// InvalidateDeviceCodeSession spends an approved device code, in the transaction that
// stores the tokens issued for it: of two polls racing with one code, one gets
// fosite.ErrNotFound here and no tokens.
func (s *Store) InvalidateDeviceCodeSession(ctx context.Context, deviceSignature string) error {
	res, err := s.q(ctx).ExecContext(ctx, `DELETE FROM tokens WHERE kind = $1 AND signature = $2 AND session->>'status' = $3`,
		kindDeviceCode, deviceSignature, deviceApproved)
	if err != nil {
		return s.mapErr(ctx, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fosite.ErrNotFound
	}
	return nil
}
