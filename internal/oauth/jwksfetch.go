package oauth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v3"
	"github.com/ory/fosite"
	"golang.org/x/sync/singleflight"

	"github.com/kubeoauth/kubeoauth/internal/netguard"
)

// A client's jwks_uri, and a jwt-bearer issuer's, is a location a tenant chooses,
// and fosite fetches a client's for any request that names the client, before any
// signature is checked, again for every assertion whose key ID the cached set
// lacks. These bound what anyone can make the server do with it.
const (
	// maxJWKSBody is the most of an answer read: a provider's key set is a few
	// kilobytes (a hundred 4096-bit RSA keys, about 150 KiB).
	maxJWKSBody = 256 << 10
	// jwksRefetchAfter is how long a location fetched for a key ID it lacked, or
	// that failed, is not fetched again: its outcome stands for that long.
	jwksRefetchAfter = 5 * time.Second
)

// guardedJWKS is fosite's JWKS fetcher with the bounds above: one fetch of a
// location at a time, shared by the requests that need it (singleflight); no forced
// or failed fetch of a location sooner than jwksRefetchAfter after the last, whose
// outcome answers meanwhile. Without them, assertions with unknown key IDs sent in
// parallel would each make the server download the location, up to its 10 s
// timeout, for anyone who knows a client ID.
//
// It also answers a jwks_uri that cannot be used as the client's fault
// (invalid_client, 401, RFC 6749 section 5.2 and RFC 7523 section 3), not fosite's
// server_error (500). Whether netguard refused the address, or the host is down,
// answers 404 or serves something that is not a key set, the client's registration
// is what fails: a 5xx would tell the client to retry and count against this server
// in the upgrade analysis, so a tenant could make any version look broken.
type guardedJWKS struct {
	fosite.JWKSFetcherStrategy
	log    *slog.Logger
	flight singleflight.Group

	mu     sync.Mutex
	recent map[string]jwksOutcome // by location
}

// jwksOutcome is a fetch's result, when it came, and whether it was forced (for a
// key ID the cached set lacked).
type jwksOutcome struct {
	at     time.Time
	set    *jose.JSONWebKeySet
	err    error
	forced bool
}

func newGuardedJWKS(f fosite.JWKSFetcherStrategy, log *slog.Logger) *guardedJWKS {
	return &guardedJWKS{JWKSFetcherStrategy: f, log: log, recent: map[string]jwksOutcome{}}
}

func (g *guardedJWKS) Resolve(ctx context.Context, location string, ignoreCache bool) (*jose.JSONWebKeySet, error) {
	set, err := g.resolve(ctx, location, ignoreCache)
	if err == nil {
		return set, nil
	}
	detail := err.Error()
	why := "The client's jwks_uri resolves to an address this server does not fetch from."
	var rfc *fosite.RFC6749Error
	if errors.As(err, &rfc) {
		detail = strings.TrimSpace(rfc.HintField + " " + rfc.DebugField)
	}
	if !errors.Is(err, netguard.ErrRefused) {
		why = "The keys at the client's jwks_uri could not be loaded."
		if rfc != nil && rfc.HintField != "" {
			why += " " + rfc.HintField
		}
	}
	g.log.Warn("client authentication failed: the client's jwks_uri is unusable; answered invalid_client, the client's problem",
		"jwks_uri", location, "detail", detail)
	return nil, fosite.ErrInvalidClient.WithHint(why).WithWrap(err)
}

// resolve is fosite's Resolve within the bounds. A set fosite has cached is
// answered from its cache, never counted as a fetch: every request asks for it
// first, and a forced fetch must stay possible when a client rotates its keys. A
// forced fetch that failed leaves that cache as it was: it answers the forced
// fetches for a while, not the others, so that anyone's assertion with a made-up
// key ID, sent while the location fails, cannot fail the client's own requests.
func (g *guardedJWKS) resolve(ctx context.Context, location string, ignoreCache bool) (*jose.JSONWebKeySet, error) {
	if last, ok := g.lastOutcome(location); ok && (ignoreCache || last.err != nil && !last.forced) {
		return last.set, last.err
	}
	// Not bound to the first caller's request: the others wait for it too, and it
	// is kept for them. The HTTP client's timeout bounds it; a caller that goes
	// stops waiting.
	ch := g.flight.DoChan(location+" "+strconv.FormatBool(ignoreCache), func() (any, error) {
		set, err := g.JWKSFetcherStrategy.Resolve(context.WithoutCancel(ctx), location, ignoreCache)
		if ignoreCache || err != nil {
			g.remember(location, jwksOutcome{at: time.Now(), set: set, err: err, forced: ignoreCache})
		}
		return set, err
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*jose.JSONWebKeySet), nil
	}
}

func (g *guardedJWKS) lastOutcome(location string) (jwksOutcome, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	o, ok := g.recent[location]
	return o, ok && time.Since(o.at) < jwksRefetchAfter
}

// remember keeps o for location; outcomes past jwksRefetchAfter are dropped when
// the map has grown, so it holds about the locations fetched in that time.
func (g *guardedJWKS) remember(location string, o jwksOutcome) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.recent) >= 256 {
		for l, old := range g.recent {
			if o.at.Sub(old.at) >= jwksRefetchAfter {
				delete(g.recent, l)
			}
		}
	}
	g.recent[location] = o
}

// cappedBody makes an answer longer than maxJWKSBody fail as it is read, rather
// than be read whole into memory (fosite decodes the body as it comes).
type cappedBody struct{ http.RoundTripper }

func (c cappedBody) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.RoundTripper.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	if resp.ContentLength > maxJWKSBody {
		_ = resp.Body.Close()
		return nil, fmt.Errorf("the key set is %d bytes, more than the %d this server reads", resp.ContentLength, maxJWKSBody)
	}
	resp.Body = http.MaxBytesReader(nil, resp.Body, maxJWKSBody)
	return resp, nil
}
