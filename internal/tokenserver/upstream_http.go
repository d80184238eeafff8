package tokenserver

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/kubeoauth/kubeoauth/internal/netguard"
)

// maxUpstreamBody bounds what the token server reads of any answer of the provider
// (discovery, JWKS, token, userinfo): a provider that sends gigabytes within the
// timeout must not run the server out of memory.
const maxUpstreamBody = 1 << 20

// upstreamClient is the HTTP client that reaches the provider. The issuer and,
// worse, every URL its discovery document names (jwks_uri, token and userinfo
// endpoints) are chosen elsewhere, so it connects only to public addresses and the
// ranges in allow (an in-cluster provider's, set by its administrator), after DNS
// resolution and on every redirect, as clients' jwks_uri fetches do. Its answers are
// bounded in size and never carried into errors (and so logs) as they are: see
// sanitizingTransport.
func upstreamClient(allow []netip.Prefix, roots *x509.CertPool) *http.Client {
	t := netguard.Policy{Allow: allow}.Transport()
	if roots != nil {
		t.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: sanitizingTransport{t}}
}

// sanitizingTransport bounds the provider's answers and keeps their bodies out of
// errors: go-oidc puts the whole body of a failed discovery, JWKS or userinfo
// answer (and of a JWKS answer that is not JSON) into its error, which is logged.
// An internal service reached through a hostile discovery document would have its
// answer end up in the log. So a failed answer keeps only an OAuth error's error
// and error_description (which the token endpoint's failures need, and which the
// page shows), and a successful one that is neither JSON nor a JWT is emptied.
type sanitizingTransport struct{ next http.RoundTripper }

func (s sanitizingTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := s.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxUpstreamBody+1))
	_ = resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading the answer of %s: %w", req.URL.Redacted(), err)
	}
	if len(body) > maxUpstreamBody {
		return nil, fmt.Errorf("the answer of %s is over %d bytes", req.URL.Redacted(), maxUpstreamBody)
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		body = oauthErrorOnly(body)
	case mt == "application/jwt": // a signed userinfo answer
	case mt == "application/x-www-form-urlencoded": // some token endpoints answer so
	case !json.Valid(body):
		body = nil
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Del("Content-Length")
	return resp, nil
}

// oauthErrorOnly keeps of a failed answer only an OAuth error (RFC 6749 5.2).
func oauthErrorOnly(body []byte) []byte {
	var e struct {
		Error       string `json:"error"`
		Description string `json:"error_description,omitempty"`
	}
	if json.Unmarshal(body, &e) != nil || e.Error == "" || len(e.Error) > 64 {
		return nil
	}
	if len(e.Description) > 256 {
		e.Description = e.Description[:256]
	}
	out, _ := json.Marshal(e) // two strings always marshal
	return out
}

const (
	schemeHTTP  = "http"
	schemeHTTPS = "https"
)

// checkEndpoints refuses a discovery document of an https issuer that sends the
// client secret, the code or the tokens anywhere but over https.
func checkEndpoints(issuer string, p *oidc.Provider) error {
	if u, err := url.Parse(issuer); err != nil || u.Scheme != schemeHTTPS {
		return nil
	}
	var doc struct {
		JWKS string `json:"jwks_uri"`
	}
	if err := p.Claims(&doc); err != nil {
		return err
	}
	for _, ep := range []struct {
		name, url string
		optional  bool
	}{{"authorization_endpoint", p.Endpoint().AuthURL, false}, {"token_endpoint", p.Endpoint().TokenURL, false},
		{"userinfo_endpoint", p.UserInfoEndpoint(), true}, {"jwks_uri", doc.JWKS, false}} {
		if ep.url == "" && ep.optional {
			continue
		}
		if u, err := url.Parse(ep.url); err != nil || u.Scheme != schemeHTTPS || u.Host == "" {
			return fmt.Errorf("%w: its %s %q is not an https URL", errInsecureEndpoint, ep.name, ep.url)
		}
	}
	return nil
}

var errInsecureEndpoint = errors.New("the discovery document is refused")
