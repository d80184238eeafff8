package tokenserver

import (
	"context"
	"math/rand/v2"
	"net"
	"net/http"
	"time"
)

// A Service picks a pod when a connection opens, and a keep-alive client keeps its
// pooled connections for as long as they work: when a pod stops serving (a blue-green
// promotion moves the serving label, a scale-out adds pods), its clients stay where
// they are until the pod dies. Like gRPC's MaxConnectionAge and Envoy's
// max_connection_duration, a connection older than the maximum age gets
// "Connection: close" on its next response (on HTTP/2, a graceful GOAWAY): the client
// opens a new one through the Service, which sends it to a pod that serves now. The
// response is complete, so nothing fails; an idle connection is left to IdleTimeout,
// for closing it under a client that is just sending would fail that request.

type connDeadlineKey struct{}

// connDeadline stamps each connection with when it gets too old: maxAge, less up to
// a tenth at random, so that connections opened together do not all reconnect at once.
func connDeadline(maxAge time.Duration) func(context.Context, net.Conn) context.Context {
	return func(ctx context.Context, _ net.Conn) context.Context {
		// Spreading reconnects needs no unpredictability: math/rand is enough.
		jitter := time.Duration(rand.Int64N(int64(maxAge)/10 + 1)) // #nosec G404
		return context.WithValue(ctx, connDeadlineKey{}, time.Now().Add(maxAge-jitter))
	}
}

// limitConnectionAge asks the client to close a connection stamped by connDeadline
// once it is too old.
func limitConnectionAge(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if deadline, ok := r.Context().Value(connDeadlineKey{}).(time.Time); ok && !time.Now().Before(deadline) {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}
