// Command upstream-op serves a real, independently written OpenID provider — the
// example server of github.com/zitadel/oidc with a groups claim
// (internal/testing/oidcop) — over HTTPS, for the end-to-end test that signs in
// through it as through a company's identity provider. Its users and their password
// are fixed (carol, in platform; dave, a contractor); its one client is given by flags.
// Not for anything but tests.
package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/testing/oidcop"
)

// Password is every user's password.
const Password = "upstream-password"

func main() {
	issuer := flag.String("issuer", "", "the issuer URL, as clients reach it (https://host:port)")
	listen := flag.String("listen", ":8443", "address to serve HTTPS on")
	cert := flag.String("tls-cert", "", "PEM certificate file")
	key := flag.String("tls-key", "", "PEM key file")
	clientID := flag.String("client-id", "kubeoauth", "the client's ID")
	secret := flag.String("client-secret", "", "the client's secret")
	redirect := flag.String("redirect-uri", "", "the client's redirect URI")
	flag.Parse()
	if err := run(*issuer, *listen, *cert, *key, *clientID, *secret, *redirect); err != nil {
		fmt.Fprintln(os.Stderr, "upstream-op:", err)
		os.Exit(1)
	}
}

func run(issuer, listen, cert, key, clientID, secret, redirect string) error {
	if issuer == "" || cert == "" || key == "" || secret == "" || redirect == "" {
		return errors.New("--issuer, --tls-cert, --tls-key, --client-secret and --redirect-uri are required")
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return err
	}
	users := []oidcop.User{
		{ID: "u-carol", Username: "carol", Password: Password, FirstName: "Carol", LastName: "Danvers",
			Email: "carol@corp.example", EmailVerified: true, Groups: []string{"platform", "oncall"}},
		{ID: "u-dave", Username: "dave", Password: Password, FirstName: "Dave", LastName: "Lister",
			Email: "dave@corp.example", Groups: []string{"contractors"}},
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	h := oidcop.New(issuer, users, []oidcop.Client{{ID: clientID, Secret: secret, RedirectURIs: []string{redirect}}}, log)
	srv := &http.Server{Addr: listen, Handler: h, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}}
	log.Info("serving", "issuer", issuer, "listen", listen)
	return srv.ListenAndServeTLS("", "")
}
