package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
)

var (
	// ErrNotFound is returned for a 404.
	ErrNotFound = errors.New("not found")
	// ErrConflict is returned for a 409: the client belongs to another owner
	// namespace. The error's text (an *Error, field ownerNamespace) names the owner.
	ErrConflict = errors.New("conflict")
	// ErrRefused: the server refused what was sent as invalid (422): sending it
	// again changes nothing; the error names the field.
	ErrRefused = errors.New("refused")
)

// HTTPClient talks to a token server's admin API.
type HTTPClient struct {
	BaseURL string // e.g. https://auth-admin.platform.svc:4445
	Token   string
	HTTP    *http.Client
}

func (c *HTTPClient) do(ctx context.Context, method, path string, body, out any) error {
	_, err := c.doHeader(ctx, method, path, body, out)
	return err
}

// doHeader is do, returning the answer's header too.
func (c *HTTPClient) doHeader(ctx context.Context, method, path string, body, out any) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.BaseURL, "/")+path, rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusNotFound {
		return nil, ErrNotFound
	}
	if resp.StatusCode >= 300 {
		// Errors end up in conditions and events any reader of the object sees. The
		// server behind an external admin URL is not necessarily ours: only our own
		// error shape is kept, short and printable; any other body is dropped, so a
		// URL pointed at some internal service cannot be used to read it.
		var e Error
		if json.Unmarshal(data, &e) == nil && e.Message != "" {
			e.Message, e.Field = sanitize(e.Message, maxMessage), sanitize(e.Field, maxField)
			if resp.StatusCode == http.StatusConflict {
				return nil, fmt.Errorf("%w: %w", ErrConflict, &e)
			}
			if resp.StatusCode == http.StatusUnprocessableEntity {
				return nil, fmt.Errorf("%w: %s %s: %d: %w", ErrRefused, method, path, resp.StatusCode, &e)
			}
			return nil, fmt.Errorf("%s %s: %d: %w", method, path, resp.StatusCode, &e)
		}
		if resp.StatusCode == http.StatusConflict {
			return nil, fmt.Errorf("%w: %s %s: 409 (not an admin API error)", ErrConflict, method, path)
		}
		return nil, fmt.Errorf("%s %s: %d %s (not an admin API error)", method, path, resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	if out != nil && len(data) > 0 {
		return resp.Header, json.Unmarshal(data, out)
	}
	return resp.Header, nil
}

// Health checks that the server answers, accepts the token and reaches its database.
func (c *HTTPClient) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/admin/health", nil, nil)
}

// PutClient creates or replaces a client; the result says whether anything changed.
// A client of another owner namespace is refused with ErrConflict.
func (c *HTTPClient) PutClient(ctx context.Context, cl *Client) (*ClientStatus, error) {
	var out ClientStatus
	return &out, c.do(ctx, http.MethodPut, "/admin/clients/"+url.PathEscape(cl.ID), cl, &out)
}

// GetClient returns a client (without secrets) or ErrNotFound.
func (c *HTTPClient) GetClient(ctx context.Context, id string) (*ClientStatus, error) {
	var out ClientStatus
	return &out, c.do(ctx, http.MethodGet, "/admin/clients/"+url.PathEscape(id), nil, &out)
}

// ListClients returns every client, asked for page by page (listAll).
func (c *HTTPClient) ListClients(ctx context.Context) ([]ClientStatus, error) {
	return listAll[ClientStatus](ctx, c, "/admin/clients", url.Values{})
}

// listPage is how many items listAll asks for at a time; the server may answer
// fewer, to keep each answer well below what do reads of one. maxListPages bounds
// a list that would not end (a server that links page after page).
const (
	listPage     = 500
	maxListPages = 100_000
)

// listAll GETs the list at path with query q, page by page: it asks for listPage
// items and follows the Link rel="next" (RFC 8288) each answer has while more
// follow. A server from before pages ignores the limit and answers the whole list
// without a link: one page.
func listAll[T any](ctx context.Context, c *HTTPClient, path string, q url.Values) ([]T, error) {
	q.Set("limit", strconv.Itoa(listPage))
	var all []T
	pages := 0
	for next := path + "?" + q.Encode(); next != ""; pages++ {
		if pages == maxListPages {
			return nil, fmt.Errorf("GET %s: more than %d pages", path, maxListPages)
		}
		var page []T
		h, err := c.doHeader(ctx, http.MethodGet, next, nil, &page)
		if err != nil {
			return nil, err
		}
		all = append(all, page...)
		// Every Link line: a proxy may add one of its own before the server's.
		link := nextLink(strings.Join(h.Values("Link"), ","))
		if link != "" && (link == next || !strings.HasPrefix(link, path+"?")) {
			return nil, fmt.Errorf("GET %s: the next page's link %q does not go on with the list", path, link)
		}
		next = link
	}
	return all, nil
}

// nextLink is the target of the rel="next" link of a Link header's value, or "".
// The admin API sends one link, its target a path with a query, which holds no
// '>' or ','.
func nextLink(header string) string {
	for l := range strings.SplitSeq(header, ",") {
		target, params, ok := strings.Cut(strings.TrimSpace(l), ">")
		if ok && strings.HasPrefix(target, "<") && strings.Contains(params, `rel="next"`) {
			return strings.TrimPrefix(target, "<")
		}
	}
	return ""
}

// DeleteClient deletes a client and revokes every token issued to it; ErrNotFound if
// there was none. With an owner namespace it deletes only that owner's client
// (ErrConflict otherwise); the operator always passes one. An empty owner deletes
// whoever's client it is, for administrators.
func (c *HTTPClient) DeleteClient(ctx context.Context, id, owner string) error {
	return c.do(ctx, http.MethodDelete, withOwner("/admin/clients/"+url.PathEscape(id), owner), nil, nil)
}

// PutGrant stores a declared (pre-approved) consent grant.
func (c *HTTPClient) PutGrant(ctx context.Context, g *Grant) (*Grant, error) {
	return c.PutOwnedGrant(ctx, g, "")
}

// PutOwnedGrant is PutGrant on a client of owner namespace owner only: the token
// server checks the owner in the same transaction as the write and answers
// ErrConflict for another namespace's client. The operator always passes one.
func (c *HTTPClient) PutOwnedGrant(ctx context.Context, g *Grant, owner string) (*Grant, error) {
	var out Grant
	return &out, c.do(ctx, http.MethodPut, withOwner(grantPath(g.ClientID, g.Subject), owner), g, &out)
}

// ListGrants lists grants, optionally of one client and/or subject.
func (c *HTTPClient) ListGrants(ctx context.Context, clientID, subject string) ([]Grant, error) {
	q := url.Values{}
	if clientID != "" {
		q.Set("client_id", clientID)
	}
	if subject != "" {
		q.Set("subject", subject)
	}
	return listAll[Grant](ctx, c, "/admin/grants", q)
}

// ListGrantsFrom lists every grant of one source (SourceDeclared, SourceBrowser).
func (c *HTTPClient) ListGrantsFrom(ctx context.Context, source string) ([]Grant, error) {
	return listAll[Grant](ctx, c, "/admin/grants", url.Values{"source": {source}})
}

// DeleteGrant revokes a grant and every token issued under it; ErrNotFound if none.
func (c *HTTPClient) DeleteGrant(ctx context.Context, clientID, subject string) error {
	return c.DeleteOwnedGrant(ctx, clientID, subject, "")
}

// DeleteOwnedGrant is DeleteGrant on a client of owner namespace owner only
// (ErrConflict otherwise, and nothing is revoked). The operator always passes one.
func (c *HTTPClient) DeleteOwnedGrant(ctx context.Context, clientID, subject, owner string) error {
	return c.do(ctx, http.MethodDelete, withOwner(grantPath(clientID, subject), owner), nil, nil)
}

func withOwner(path, owner string) string {
	if owner == "" {
		return path
	}
	return path + "?" + url.Values{"owner": {owner}}.Encode()
}

// Events returns log entries after seq after, waiting up to wait for one to arrive.
func (c *HTTPClient) Events(ctx context.Context, after int64, wait time.Duration) (*Events, error) {
	var out Events
	path := "/admin/events?after=" + strconv.FormatInt(after, 10) + "&wait=" + wait.String()
	return &out, c.do(ctx, http.MethodGet, path, nil, &out)
}

func grantPath(clientID, subject string) string {
	return "/admin/grants/" + url.PathEscape(clientID) + "/" + url.PathEscape(subject)
}

// Bounds of what a server's error may put into an error string.
const (
	maxMessage = 200
	maxField   = 100
)

// sanitize keeps the first max runes of s that are printable, each other rune
// replaced by a space, and marks a cut.
func sanitize(s string, max int) string {
	var b strings.Builder
	n := 0
	for _, r := range s {
		if n == max {
			b.WriteString("…")
			break
		}
		if !unicode.IsPrint(r) {
			r = ' '
		}
		b.WriteRune(r)
		n++
	}
	return b.String()
}

// VerifyAuthorize has the server approve an authorization request of a temporary
// verification client for VerifySubject and returns the code, for the upgrade
// verification to exchange at a token endpoint. A server older than the endpoint
// answers ErrNotFound.
func (c *HTTPClient) VerifyAuthorize(ctx context.Context, req *VerifyAuthorizeRequest) (*VerifyAuthorization, error) {
	var out VerifyAuthorization
	return &out, c.do(ctx, http.MethodPost, "/admin/verify/authorize", req, &out)
}
