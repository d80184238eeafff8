package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/kubeoauth/kubeoauth/internal/adminapi"
	"github.com/kubeoauth/kubeoauth/internal/adminpki"
	"github.com/kubeoauth/kubeoauth/internal/tokenserver"
	"github.com/kubeoauth/kubeoauth/internal/verify"
)

// verifyCmd is `tokenserver verify`, the blue-green upgrade's verification Job: it
// runs in the new image, checks the new color (--server) against the serving one
// (--peer), prints one line per check and exits 1 when one failed. Its summary goes
// to the termination log, where the operator reads why verification failed.
func verifyCmd(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	server := fs.String("server", "", "Public base URL of the new color (green) through its own Service, "+
		"e.g. http://auth-green.platform.svc:4444 (required).")
	peer := fs.String("peer", "", "Public base URL of the serving color (blue), e.g. http://auth-blue.platform.svc:4444 (required).")
	adminURL := fs.String("admin-url", "", "Admin API base URL, e.g. https://auth-admin.platform.svc:4445 (required).")
	adminTokenFile := fs.String("admin-token-file", "", "File holding the admin API bearer token (required).")
	adminCAFile := fs.String("admin-ca-file", "", "PEM CA bundle the admin API's certificate must chain to; empty: the system's roots.")
	adminServerName := fs.String("admin-server-name", "",
		"Name the admin API's certificate must be valid for, when --admin-url's host is another (a pod or per-color Service).")
	issuer := fs.String("issuer", "", "The issuer URL both colors' discovery documents must name; empty skips that check.")
	loginFile := fs.String("login-file", "",
		"File holding \"username:password\" of a user who may sign in, for the refresh checks' authorization code; "+
			"empty: the admin API issues it (POST /admin/verify/authorize, which --admin-url must serve).")
	timeout := fs.Duration("timeout", 2*time.Minute, "Time for all checks; the temporary client is deleted after it all the same.")
	propagation := fs.Duration("propagation", 2*time.Second, "How long a revocation may take to reach every pod of both colors.")
	termLog := fs.String("termination-log", "/dev/termination-log",
		"File the summary is written to, if it exists (Kubernetes creates it); the operator reads it as the Job's result.")
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := verifyConfig(*server, *peer, *issuer, *loginFile, *propagation)
	if err != nil {
		return err
	}
	if cfg.Admin, err = verifyAdmin(*adminURL, *adminTokenFile, *adminCAFile, *adminServerName); err != nil {
		return err
	}
	cfg.Out = stdout
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	report, err := verify.Run(ctx, cfg)
	writeTerminationLog(*termLog, []byte(report.Summary()+"\n"))
	return err
}

func verifyConfig(server, peer, issuer, loginFile string, propagation time.Duration) (verify.Config, error) {
	cfg := verify.Config{Server: server, Peer: peer, Issuer: issuer, Propagation: propagation}
	for _, f := range []struct{ name, value string }{{"--server", server}, {"--peer", peer}} {
		if f.value == "" {
			return cfg, fmt.Errorf("%s is required", f.name)
		}
		if err := httpURL(f.value); err != nil {
			return cfg, fmt.Errorf("%s %q: %w", f.name, f.value, err)
		}
	}
	if propagation <= 0 {
		return cfg, errors.New("--propagation must be positive")
	}
	if loginFile != "" {
		line, err := tokenserver.ReadSecretFile(loginFile)
		if err != nil {
			return cfg, fmt.Errorf("--login-file: %w", err)
		}
		user, password, ok := strings.Cut(line, ":")
		if !ok || user == "" || password == "" {
			return cfg, fmt.Errorf("--login-file %s: want one line username:password", loginFile)
		}
		cfg.Login = &verify.Login{Username: user, Password: password}
	}
	return cfg, nil
}

func verifyAdmin(adminURL, tokenFile, caFile, serverName string) (*adminapi.HTTPClient, error) {
	switch {
	case adminURL == "":
		return nil, errors.New("--admin-url is required")
	case tokenFile == "":
		return nil, errors.New("--admin-token-file is required")
	}
	if err := httpURL(adminURL); err != nil {
		return nil, fmt.Errorf("--admin-url %q: %w", adminURL, err)
	}
	token, err := tokenserver.ReadSecretFile(tokenFile)
	if err != nil {
		return nil, fmt.Errorf("--admin-token-file: %w", err)
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverName}
	if caFile != "" {
		pem, err := os.ReadFile(caFile) // #nosec G304 -- a mounted Secret the operator names
		if err != nil {
			return nil, fmt.Errorf("--admin-ca-file: %w", err)
		}
		if t.TLSClientConfig.RootCAs, err = adminpki.Pool(pem); err != nil {
			return nil, fmt.Errorf("--admin-ca-file %s: %w", caFile, err)
		}
	}
	return &adminapi.HTTPClient{BaseURL: adminURL, Token: token, HTTP: &http.Client{Transport: t, Timeout: 15 * time.Second}}, nil
}

func httpURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return errors.New("want an http or https URL")
	}
	return nil
}
