package tokenserver

import (
	"context"
	"errors"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sync"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
)

// A Copy upgrade's cutover fences the database this server uses (the store's
// Cutover; docs/upgrades.md, "Fence and cutover"). The server looks at the fence
// every FencePollInterval and:
//
//   - holding, while its lease lasts, or cut over: holds write requests (not
//     answered) until the state changes, so that nothing new is written while the
//     replay drains; reads are served;
//   - forwarding: sends every public request to the other side's servers, the
//     held ones included, and answers admin writes 503 (the operator retries);
//   - no fence, or a lease that ran out: serves as usual.
//
// A held request is woken by the poll that sees the change, not by a timer of its
// own, and gives up after FenceMaxHold with 503 and Retry-After.

// FencePollInterval is how often the server reads the fence: the cutover waits a
// few of these (NoticeDelay) before it counts on every server holding.
const FencePollInterval = 100 * time.Millisecond

// DefaultFenceMaxHold is how long a write request is held at most.
const DefaultFenceMaxHold = 30 * time.Second

type fenceMode int

const (
	fenceNone fenceMode = iota
	fenceHold
	fenceForward
)

// fenceView is what the server does about the fence now.
type fenceView struct {
	mode      fenceMode
	state     string // the metric's label: none, holding, cut_over, forwarding
	upgradeID string
	forwardTo string
	proxy     *httputil.ReverseProxy
}

// fenceWatch holds the current view and a channel closed when it changes.
type fenceWatch struct {
	read    func(context.Context) (postgres.Fence, bool, error)
	maxHold time.Duration
	poll    time.Duration

	mu      sync.Mutex
	view    fenceView
	changed chan struct{}
	failing bool
}

func newFenceWatch(read func(context.Context) (postgres.Fence, bool, error), maxHold, poll time.Duration) *fenceWatch {
	if maxHold <= 0 {
		maxHold = DefaultFenceMaxHold
	}
	if poll <= 0 {
		poll = FencePollInterval
	}
	return &fenceWatch{read: read, maxHold: maxHold, poll: poll, view: fenceView{state: "none"}, changed: make(chan struct{})}
}

// active tells whether the fence is up: holding, cut over or forwarding.
func (fw *fenceWatch) active() bool {
	if fw == nil {
		return false
	}
	v, _ := fw.current()
	return v.mode != fenceNone
}

// fenceRetry is what a request the fence turned away is told.
const fenceRetry = "The service is moving to a new version; retry in a moment."

// current returns the view and a channel closed at its next change.
func (fw *fenceWatch) current() (fenceView, <-chan struct{}) {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return fw.view, fw.changed
}

// watchFence polls the fence until ctx ends.
func (s *Server) watchFence(ctx context.Context) {
	if s.fence == nil {
		return
	}
	t := time.NewTicker(s.fence.poll)
	defer t.Stop()
	for {
		s.pollFence(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Server) pollFence(ctx context.Context) {
	fw := s.fence
	if fw == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	f, ok, err := fw.read(ctx)
	if err != nil {
		// The last view stands: a server that cannot read its database serves
		// nothing that writes anyway, and a held request gives up at maxHold.
		fw.mu.Lock()
		first := !fw.failing
		fw.failing = true
		fw.mu.Unlock()
		if first {
			s.cfg.Log.Warn("reading the upgrade fence", "err", err)
		}
		return
	}
	next := fenceView{state: "none"}
	switch {
	case !ok:
	case f.State == postgres.FenceHolding && f.LeaseLive, f.State == postgres.FenceCutOver:
		next = fenceView{mode: fenceHold, state: f.State, upgradeID: f.UpgradeID}
	case f.State == postgres.FenceForwarding:
		next = fenceView{mode: fenceForward, state: f.State, upgradeID: f.UpgradeID, forwardTo: f.ForwardTo}
	}
	fw.mu.Lock()
	defer fw.mu.Unlock()
	fw.failing = false
	prev := fw.view
	// The mode follows from these (a forward_to that cannot be used holds), so an
	// unchanged row is no change, and a bad URL is logged once.
	if next.state == prev.state && next.upgradeID == prev.upgradeID && next.forwardTo == prev.forwardTo {
		return
	}
	if next.mode == fenceForward {
		proxy, err := s.forwarder(next.forwardTo)
		if err != nil {
			// The cutover is past its point of no return: holding is all that is left.
			s.cfg.Log.Error("cannot forward to the upgraded servers; holding write requests", "forwardTo", next.forwardTo, "err", err)
			next.mode = fenceHold
		}
		next.proxy = proxy
	}
	fw.view = next
	close(fw.changed)
	fw.changed = make(chan struct{})
	m := s.cfg.Metrics
	m.fenceState.WithLabelValues(prev.state).Set(0)
	m.fenceState.WithLabelValues(next.state).Set(1)
	s.cfg.Log.Info("upgrade fence", "state", next.state, "upgrade", next.upgradeID, "forwardTo", next.forwardTo)
}

// forwarder is the reverse proxy to the other side's servers. The request keeps
// its Host: it is for the same public name, only served by the other side.
func (s *Server) forwarder(to string) (*httputil.ReverseProxy, error) {
	u, err := url.Parse(to)
	if err != nil {
		return nil, err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, errors.New("want an http or https URL")
	}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.SetXForwarded()
			pr.Out.Host = pr.In.Host
			pr.Out.Header.Set(forwardedHeader, "1")
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			s.cfg.Log.Warn("forwarding to the upgraded servers", "path", r.URL.Path, "forwardTo", to, "err", err)
			s.fenceUnavailable(w, r, fenceRetry)
		},
	}, nil
}

// forwardedHeader marks a request a fenced server forwarded. A server that is
// forwarding itself answers such a one 503 instead of passing it on again: two
// databases each naming the other (a cutover cut short between its steps) must not
// send a request round in circles.
const forwardedHeader = "X-Kubeoauth-Forwarded"

// forwardLoopWait is how long a forwarded request waits for a server that still
// forwards to see that it should serve: a few polls.
const forwardLoopWait = 2 * time.Second

// isWrite tells the requests that may write: every method but GET and HEAD, and
// the GETs that write: the authorization endpoint's (it issues a code when consent
// was given before), the upstream provider's callback (it starts a sign-in session,
// and the provider's code it carries works once: answered 503 by the guard, the
// sign-in would be lost, not retried) and the end-session endpoint's (it ends one).
func isWrite(r *http.Request) bool {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return true
	}
	switch r.URL.Path {
	case "/oauth2/auth", upstreamCallbackPath, endSessionPath:
		return true
	}
	return false
}

// fenced applies the fence to the public handler (admin false) or the admin one.
// Health and readiness are always answered here: they are this process's.
func (s *Server) fenced(h http.Handler, admin bool) http.Handler {
	if s.fence == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			h.ServeHTTP(w, r)
			return
		}
		var held, looping *time.Timer
		for {
			v, changed := s.fence.current()
			switch {
			case v.mode == fenceForward && !admin && r.Header.Get(forwardedHeader) != "":
				// Forwarded here while this server still forwards: at a cutover the
				// new side's fence row is deleted (step 8) a moment before the old
				// side forwards (step 9), and this server's view may be one poll
				// behind. Look now, and wait for the change a little; only two
				// databases naming each other for real get a 503.
				if looping == nil {
					looping = time.NewTimer(forwardLoopWait)
					defer looping.Stop()
					s.pollFence(r.Context())
					continue
				}
				select {
				case <-changed:
					continue
				case <-r.Context().Done():
					return
				case <-looping.C:
				}
				s.cfg.Log.Warn("a forwarded request reached a server that forwards too; refusing it", "path", r.URL.Path,
					"forwardTo", v.forwardTo)
				s.fenceUnavailable(w, r, fenceRetry)
				return
			case v.mode == fenceForward && !admin:
				s.forward(w, r, v)
				return
			case v.mode == fenceForward:
				// Reads too: this database no longer takes the writes the other side
				// does, so its clients, grants and event log would be stale — a
				// consent mirror following the log here would miss what the other side
				// logs. Closing the connection sends the retry through the Service,
				// which by now leads to the other side.
				w.Header().Set("Retry-After", "1")
				w.Header().Set("Connection", "close")
				adminError(w, http.StatusServiceUnavailable, "",
					"this database was cut over to the upgraded servers' ("+v.upgradeID+"); ask them")
				return
			case v.mode == fenceHold && isWrite(r):
				if held == nil {
					held = time.NewTimer(s.fence.maxHold)
					defer held.Stop()
					s.cfg.Metrics.fenceHeld.Inc()
					defer s.cfg.Metrics.fenceHeld.Dec()
				}
				select {
				case <-changed:
					continue
				case <-r.Context().Done():
					return
				case <-held.C:
					s.cfg.Log.Warn("a request held by the upgrade fence gave up", "path", r.URL.Path, "after", s.fence.maxHold)
					if admin {
						w.Header().Set("Retry-After", "1")
						adminError(w, http.StatusServiceUnavailable, "", "an upgrade's cutover holds writes; retry")
						return
					}
					s.fenceUnavailable(w, r, fenceRetry)
					return
				}
			default:
				h.ServeHTTP(w, r)
				return
			}
		}
	})
}

// forward sends a public request to the other side. The answer is theirs, version
// header included, and closes the connection: the client's next one goes through
// the Service, which by now leads to the other side, instead of through here.
func (s *Server) forward(w http.ResponseWriter, r *http.Request, v fenceView) {
	s.cfg.Metrics.fenceForwarded.Inc()
	w.Header().Del(versionHeader)
	w.Header().Set("Connection", "close")
	v.proxy.ServeHTTP(w, r)
}

// fenceUnavailable answers 503 with Retry-After, as OAuth JSON on the OAuth
// endpoints and as a page elsewhere.
func (s *Server) fenceUnavailable(w http.ResponseWriter, r *http.Request, msg string) {
	w.Header().Set("Retry-After", "1")
	switch r.URL.Path {
	case "/oauth2/token", "/oauth2/par", "/oauth2/introspect", "/oauth2/revoke", "/userinfo":
		s.writeOAuthError(w, http.StatusServiceUnavailable, "temporarily_unavailable", msg)
	default:
		s.errorPage(w, http.StatusServiceUnavailable, msg)
	}
}

// closeIdleWhileForwarding makes a forwarding server shed its keep-alive clients:
// every forwarded answer closes its connection, and a connection still idle a
// moment later is closed, so that a quiet client's next request opens a new one
// through the Service (app.go's drain, for the same race). They are kept again if
// the fence is lifted (a rollback cut back to this side).
func (s *Server) closeIdleWhileForwarding(ctx context.Context, hs *http.Server) {
	if s.fence == nil {
		return
	}
	var quiet *time.Timer
	for {
		v, changed := s.fence.current()
		if v.mode == fenceForward && quiet == nil {
			quiet = time.AfterFunc(keepAliveGrace, func() { hs.SetKeepAlivesEnabled(false) })
		}
		if v.mode != fenceForward && quiet != nil {
			quiet.Stop()
			quiet = nil
			if !s.Draining() {
				hs.SetKeepAlivesEnabled(true)
			}
		}
		select {
		case <-ctx.Done():
			if quiet != nil {
				quiet.Stop()
			}
			return
		case <-changed:
		}
	}
}
