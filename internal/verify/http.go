package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"unicode"
)

// oauthError is an OAuth 2.0 error answer (RFC 6749 section 5.2).
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// post sends an authenticated form to one of a server's endpoints, the client's
// credentials in the Authorization header as RFC 6749 section 2.3.1 encodes them,
// and decodes a 200 answer into out.
func (v *verifier) post(ctx context.Context, endpoint string, form url.Values, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(v.clientID), url.QueryEscape(v.secret))
	return v.do(req, out)
}

// getJSON reads a public document (discovery) into out.
func (v *verifier) getJSON(ctx context.Context, u string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	return v.do(req, out)
}

// do sends req and decodes a 200 answer into out (nil: the answer is not read); any
// other answer is an error naming the request and what the server said.
func (v *verifier) do(req *http.Request, out any) error {
	what := req.Method + " " + req.URL.String()
	resp, err := v.http.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", what, describe(resp.StatusCode, body))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s: the answer is not JSON: %s", what, printable(string(body), 200))
	}
	return nil
}

// describe says what an error answer was: its status and, for an OAuth error, the
// error and its description.
func describe(code int, body []byte) string {
	var e oauthError
	if json.Unmarshal(body, &e) == nil && e.Error != "" {
		msg := fmt.Sprintf("%d %s", code, printable(e.Error, 100))
		if e.Description != "" {
			msg += " (" + printable(e.Description, 300) + ")"
		}
		return msg
	}
	return fmt.Sprintf("%d %s", code, http.StatusText(code))
}

// printable keeps what a server said fit for one line of a log and a termination
// message: at most max runes, control characters as spaces.
func printable(s string, max int) string {
	var b strings.Builder
	for i, r := range []rune(s) {
		if i == max {
			b.WriteString("…")
			break
		}
		if !unicode.IsPrint(r) {
			r = ' '
		}
		b.WriteRune(r)
	}
	return b.String()
}

// plainJar keeps the cookies of one sign-in, Secure or not. The server marks its
// cookies Secure when its issuer is https, but verification reaches a color's pods
// through their own Service, in clear text inside the cluster as the TLS-terminating
// ingress does, where net/http/cookiejar would never send them back. It serves only
// one server's login and authorization pages.
type plainJar struct {
	mu      sync.Mutex
	cookies map[string]*http.Cookie
}

func (j *plainJar) SetCookies(_ *url.URL, cookies []*http.Cookie) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.cookies == nil {
		j.cookies = map[string]*http.Cookie{}
	}
	for _, c := range cookies {
		if c.MaxAge < 0 {
			delete(j.cookies, c.Name)
			continue
		}
		// Only name and value go back in a Cookie header; the attributes are the
		// server's instructions to a browser's jar, which this one deliberately is not.
		j.cookies[c.Name] = &http.Cookie{Name: c.Name, Value: c.Value} // #nosec G124 -- a client's jar, see above
	}
}

func (j *plainJar) Cookies(*url.URL) []*http.Cookie {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]*http.Cookie, 0, len(j.cookies))
	for _, c := range j.cookies {
		out = append(out, c)
	}
	return out
}

// The sign-in page's hidden fields (CSRF token, return address) and its error, as
// the token server's templates write them.
var (
	hiddenInput = regexp.MustCompile(`<input type="hidden" name="([^"]+)" value="([^"]*)">`)
	pageError   = regexp.MustCompile(`<p class="error" id="error" role="alert">([^<]*)</p>`)
)

func hiddenFields(page string) url.Values {
	v := url.Values{}
	for _, m := range hiddenInput.FindAllStringSubmatch(page, -1) {
		v.Add(html.UnescapeString(m[1]), html.UnescapeString(m[2]))
	}
	return v
}

// pageMessage is the error a page shows, or the start of the page.
func pageMessage(page string) string {
	if m := pageError.FindStringSubmatch(page); m != nil {
		return printable(html.UnescapeString(m[1]), 200)
	}
	return printable(page, 200)
}
