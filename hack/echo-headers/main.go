// Command echo-headers is the upstream app the end-to-end tests put behind
// oauth2-proxy (test/e2e/relyingparty_test.go, docs/integrations/oauth2-proxy.md): a
// page showing who the proxy says the user is, from the headers it sets
// (X-Forwarded-User, -Email, -Groups, -Preferred-Username). It trusts them blindly, as
// any app behind such a proxy does, so it must only be reachable through the proxy.
package main

import (
	"flag"
	"html/template"
	"log"
	"net/http"
	"time"
)

var page = template.Must(template.New("").Parse(`<!doctype html>
<title>Who am I</title>
<p>User: <span id="user">{{.User}}</span></p>
<p>Email: <span id="email">{{.Email}}</span></p>
<p>Groups: <span id="groups">{{.Groups}}</span></p>
<p>Preferred username: <span id="preferred-username">{{.PreferredUsername}}</span></p>
`))

func main() {
	addr := flag.String("listen", "127.0.0.1:8080", "address to serve on")
	flag.Parse()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = page.Execute(w, map[string]string{
			"User":              r.Header.Get("X-Forwarded-User"),
			"Email":             r.Header.Get("X-Forwarded-Email"),
			"Groups":            r.Header.Get("X-Forwarded-Groups"),
			"PreferredUsername": r.Header.Get("X-Forwarded-Preferred-Username"),
		})
	})
	srv := &http.Server{Addr: *addr, ReadHeaderTimeout: 10 * time.Second}
	log.Printf("serving on %s", *addr)
	log.Fatal(srv.ListenAndServe())
}
