//go:build e2e

package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/go-logr/logr"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"
	"k8s.io/client-go/kubernetes"

	"github.com/kubeoauth/kubeoauth/internal/localcluster"
	"github.com/kubeoauth/kubeoauth/internal/localcluster/netsvc"
	"github.com/kubeoauth/kubeoauth/internal/testing/headless"
)

// The relying parties' scenario has a TokenServer of its own, in a namespace of its
// own, with an https issuer: the API server accepts no other. Its front is what an
// Ingress or a load balancer is in a real cluster: TLS terminated at a fixed address
// (the host's on the pod network, which the browser, the API server and pods all
// reach) and forwarded to the Service's ready endpoints.
const (
	rpNS        = "rp"
	rpIssuer    = "https://" + localcluster.HostIP + ":8443"
	rpProxyAddr = "127.0.0.1:4180"
	// kubectlClientID is the ID token's audience the API server accepts.
	kubectlClientID = "kubernetes"
	// otherClientID is another app of the same TokenServer: its ID tokens, signed by
	// the same keys, are not for the API server.
	otherClientID = "another-app"
)

// rpUsers are the people of the scenario: alice is in the group the proxy and the
// RoleBinding admit, bob is not.
var rpUsers = []struct{ name, email, groups string }{
	{"alice", "alice@example.com", "[platform, admins]"},
	{"bob", "bob@example.com", "[interns]"},
}

const rpServer = `apiVersion: v1
kind: Namespace
metadata: {name: rp}
---
apiVersion: v1
kind: Secret
metadata: {name: people, namespace: rp}
stringData:
  users: |
%s---
apiVersion: oauth.kubeoauth.io/v1alpha1
kind: TokenServer
metadata: {name: auth, namespace: rp}
spec:
  issuer: ` + rpIssuer + `
  image: ghcr.io/kubeoauth/tokenserver:v0.1.0
  replicas: 1
  database: {managed: {storageSize: 1Gi}}
  login: {usersSecretRef: {name: people}}
`

// The proxy, as docs/integrations/oauth2-proxy.md has it, in front of an app that
// shows the headers the proxy sets; only alice's group is let through.
const rpProxy = `apiVersion: oauth.kubeoauth.io/v1alpha1
kind: OAuthClient
metadata: {name: oauth2-proxy, namespace: rp}
spec:
  serverRef: {name: auth}
  clientName: Who am I
  grantTypes: [authorization_code]
  redirectURIs: [http://` + rpProxyAddr + `/oauth2/callback]
  scopes: [openid, email, profile, groups]
---
apiVersion: v1
kind: Secret
metadata: {name: oauth2-proxy-cookie, namespace: rp}
stringData: {secret: %s}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: issuer-ca, namespace: rp}
data:
  ca.crt: |
%s---
apiVersion: apps/v1
kind: Deployment
metadata: {name: whoami, namespace: rp}
spec:
  selector: {matchLabels: {app: whoami}}
  template:
    metadata: {labels: {app: whoami}}
    spec:
      containers:
      - name: oauth2-proxy
        image: quay.io/oauth2-proxy/oauth2-proxy:v7.15.6
        args:
        - --provider=oidc
        - --oidc-issuer-url=` + rpIssuer + `
        - --provider-ca-file=/etc/issuer-ca/ca.crt
        - --scope=openid email profile groups
        - --oidc-groups-claim=groups
        - --email-domain=*
        - --allowed-group=platform
        - --code-challenge-method=S256
        - --redirect-url=http://` + rpProxyAddr + `/oauth2/callback
        - --http-address=0.0.0.0:4180
        - --upstream=http://127.0.0.1:8080/
        - --skip-provider-button
        - --cookie-secure=false
        env:
        - {name: OAUTH2_PROXY_CLIENT_ID, valueFrom: {secretKeyRef: {name: oauth2-proxy-oauth, key: client_id}}}
        - {name: OAUTH2_PROXY_CLIENT_SECRET, valueFrom: {secretKeyRef: {name: oauth2-proxy-oauth, key: client_secret}}}
        - {name: OAUTH2_PROXY_COOKIE_SECRET, valueFrom: {secretKeyRef: {name: oauth2-proxy-cookie, key: secret}}}
        ports: [{containerPort: 4180}]
        readinessProbe: {httpGet: {path: /ping, port: 4180}}
        volumeMounts: [{name: issuer-ca, mountPath: /etc/issuer-ca, readOnly: true}]
      - name: app
        image: ghcr.io/kubeoauth/echo-headers:test
        args: [--listen=127.0.0.1:8080]
      volumes:
      - {name: issuer-ca, configMap: {name: issuer-ca}}
---
apiVersion: v1
kind: Service
metadata: {name: whoami, namespace: rp}
spec:
  selector: {app: whoami}
  ports: [{port: 4180, targetPort: 4180}]
`

// kubectl's client, as kubelogin uses one: public (no secret on people's machines),
// PKCE, a loopback redirect. The RoleBinding lets alice's group read the namespace.
const rpKubectl = `apiVersion: oauth.kubeoauth.io/v1alpha1
kind: OAuthClient
metadata: {name: kubectl, namespace: rp}
spec:
  serverRef: {name: auth}
  clientID: ` + kubectlClientID + `
  clientName: kubectl
  grantTypes: [authorization_code]
  tokenEndpointAuthMethod: none
  redirectURIs: [%[1]s]
  scopes: [openid, email, profile, groups]
---
apiVersion: oauth.kubeoauth.io/v1alpha1
kind: OAuthClient
metadata: {name: other, namespace: rp}
spec:
  serverRef: {name: auth}
  clientID: ` + otherClientID + `
  clientName: Another app
  grantTypes: [authorization_code]
  tokenEndpointAuthMethod: none
  redirectURIs: [%[1]s]
  scopes: [openid, email, profile, groups]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: platform-view, namespace: rp}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: Group, name: "oidc:platform"}
`

// What docs/integrations/kubernetes.md configures: the TokenServer as an issuer whose
// ID tokens for the kubernetes client are accepted, emails and groups prefixed.
const rpAuthenticationConfig = `apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
jwt:
- issuer:
    url: ` + rpIssuer + `
    audiences: [` + kubectlClientID + `]
    certificateAuthority: |
%s  claimMappings:
    username: {claim: email, prefix: "oidc:"}
    groups: {claim: groups, prefix: "oidc:"}
`

// Real relying parties, unmodified, signing people in through kubeoauth's pages in
// a real browser: oauth2-proxy in front of an app, and kube-apiserver trusting the
// TokenServer's ID tokens for kubectl.
func testRelyingParties(t *testing.T) {
	start := time.Now()
	out, err := exec.Command(suite.tool, "load", "--dir", suite.dir, "--bin", filepath.Join(suite.repo, "bin"), // #nosec G204 -- our tool
		filepath.Join(suite.repo, "test", "e2e", "testdata", "relyingparty-images.yaml")).CombinedOutput()
	if err != nil {
		t.Fatalf("loading oauth2-proxy and the app as images: %v\n%s", err, out)
	}
	passwords := map[string]string{}
	var users strings.Builder
	for _, u := range rpUsers {
		passwords[u.name] = rand.Text()
		hash, err := bcrypt.GenerateFromPassword([]byte(passwords[u.name]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&users, "    - {username: %s, passwordHash: '%s', email: %s, emailVerified: true, groups: %s}\n",
			u.name, hash, u.email, u.groups)
	}
	apply(t, fmt.Sprintf(rpServer, users.String()))
	// Gone before the next scenarios, whose load should not share the machine with
	// this server's teardown.
	t.Cleanup(func() {
		if _, err := kubectl(context.Background(), "delete", "namespace", rpNS, "--timeout=2m"); err != nil {
			t.Error(err)
		}
	})
	if _, err := kubectl(t.Context(), "-n", rpNS, "wait", "--for=condition=Ready", "tokenserver/auth", "--timeout=4m"); err != nil {
		t.Fatal(err)
	}
	caPEM, pin := issuerFront(t)
	t.Logf("TokenServer Ready behind its TLS front %.1fs after the start", time.Since(start).Seconds())

	for _, s := range []struct {
		name string
		run  func(*testing.T, string, string, map[string]string)
	}{
		{"OAuth2ProxyShowsTheAppEmailAndGroups", testOAuth2Proxy},
		{"KubectlWithIDTokenAllowedOrDeniedByRBACOnGroups", testKubectlOIDC},
	} {
		if !t.Run(s.name, func(t *testing.T) { s.run(t, caPEM, pin, passwords) }) {
			return
		}
	}
	t.Logf("relying parties: %.1fs", time.Since(start).Seconds())
}

// issuerFront serves rpIssuer: TLS with a certificate of a CA made for the test,
// forwarded to the TokenServer's Service. It returns the CA's PEM and the pin of the
// server key for Chromium.
func issuerFront(t *testing.T) (caPEM, pin string) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubeoauth e2e issuer CA"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		Subject: pkix.Name{CommonName: localcluster.HostIP}, IPAddresses: []net.IP{net.ParseIP(localcluster.HostIP)},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}},
		ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(leafDER)
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)

	u, _ := url.Parse(rpIssuer)
	forward(t, rpNS, "auth", 80, u.Host, &tls.Config{MinVersion: tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER, caDER}, PrivateKey: key, Leaf: leaf}}})
	caPEM = string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	// The front answers as the issuer once the server's pods are its endpoints.
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	eventually(t, 30*time.Second, "discovery through the TLS front", func() error {
		resp, err := hc.Get(rpIssuer + "/.well-known/openid-configuration")
		if err != nil {
			return err
		}
		defer func() { _ = resp.Body.Close() }()
		var d struct {
			Issuer string `json:"issuer"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&d); err != nil || d.Issuer != rpIssuer {
			return fmt.Errorf("%s: issuer %q, %v", resp.Status, d.Issuer, err)
		}
		return nil
	})
	return caPEM, base64.StdEncoding.EncodeToString(sum[:])
}

// forward listens on addr (with TLS when tc is set) and forwards each connection to
// a ready endpoint of the Service, as `localcluster port-forward` does, until the
// test ends.
func forward(t *testing.T, namespace, service string, port int32, addr string, tc *tls.Config) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	cs, err := kubernetes.NewForConfig(suite.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- netsvc.PortForward(ctx, cs, namespace, service, port, ln, logr.Discard()) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("forwarding to %s/%s: %v", namespace, service, err)
		}
	})
}

// apply creates or updates what manifest says, as kubectl apply -f - does.
func apply(t *testing.T, manifest string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), suite.kubectl, "apply", "-f", "-") // #nosec G204 -- the test's own command
	cmd.Env = append(os.Environ(), "KUBECONFIG="+localcluster.AdminKubeconfig(suite.dir))
	cmd.Stdin = strings.NewReader(manifest)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s\n%s", err, out, manifest)
	}
}

func indent(s, prefix string) string {
	var b strings.Builder
	for line := range strings.Lines(s) {
		b.WriteString(prefix + line)
	}
	return b.String()
}

// signIn fills kubeoauth's login page as user and allows the app on the consent page.
func signIn(user, password string) chromedp.Tasks {
	return chromedp.Tasks{
		chromedp.WaitVisible("#username", chromedp.ByID),
		chromedp.SendKeys("#username", user, chromedp.ByID),
		chromedp.SendKeys("#password", password, chromedp.ByID),
		chromedp.Click("#sign-in", chromedp.ByID),
		chromedp.WaitVisible("#approve", chromedp.ByID),
		chromedp.Click("#approve", chromedp.ByID),
	}
}

// A person opens the app: oauth2-proxy sends them to kubeoauth's login and consent
// pages and back, and the app sees their email and groups from the ID token. Someone
// outside the allowed group gets oauth2-proxy's 403 instead, and never the app.
func testOAuth2Proxy(t *testing.T, caPEM, pin string, passwords map[string]string) {
	cookie := make([]byte, 32)
	_, _ = rand.Read(cookie)
	apply(t, fmt.Sprintf(rpProxy, base64.URLEncoding.EncodeToString(cookie), indent(caPEM, "    ")))
	if _, err := kubectl(t.Context(), "-n", rpNS, "rollout", "status", "deployment/whoami", "--timeout=2m"); err != nil {
		out, _ := kubectl(context.Background(), "-n", rpNS, "logs", "deploy/whoami", "-c", "oauth2-proxy")
		t.Fatalf("%v\n%s", err, out)
	}
	forward(t, rpNS, "whoami", 4180, rpProxyAddr, nil)

	// Without a session the app is not reached: the proxy sends the browser to sign in.
	noRedirect := &http.Client{Timeout: 5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get("http://" + rpProxyAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Errorf("the app without a session: %s, want a redirect to sign in", resp.Status)
	}

	trust := chromedp.Flag("ignore-certificate-errors-spki-list", pin)
	var email, groups, user, landed string
	if err := chromedp.Run(headless.Chromium(t, trust),
		chromedp.Navigate("http://"+rpProxyAddr+"/"),
		signIn("alice", passwords["alice"]),
		chromedp.WaitVisible("#email", chromedp.ByID),
		chromedp.Text("#email", &email, chromedp.ByID),
		chromedp.Text("#groups", &groups, chromedp.ByID),
		chromedp.Text("#user", &user, chromedp.ByID),
		chromedp.Location(&landed),
	); err != nil {
		out, _ := kubectl(context.Background(), "-n", rpNS, "logs", "deploy/whoami", "-c", "oauth2-proxy", "--tail", "20")
		t.Fatalf("alice through oauth2-proxy: %v\n%s", err, out)
	}
	if email != "alice@example.com" || groups != "platform,admins" || user != "alice" || landed != "http://"+rpProxyAddr+"/" {
		t.Errorf("the app at %s sees user %q, email %q, groups %q; want alice, alice@example.com, platform,admins",
			landed, user, email, groups)
	}

	var title, body string
	if err := chromedp.Run(headless.Chromium(t, trust),
		chromedp.Navigate("http://"+rpProxyAddr+"/"),
		signIn("bob", passwords["bob"]),
		chromedp.WaitVisible(".status-code", chromedp.ByQuery),
		chromedp.Title(&title),
		chromedp.Text("body", &body, chromedp.ByQuery),
	); err != nil {
		t.Fatalf("bob through oauth2-proxy: %v", err)
	}
	if title != "403 Forbidden" || strings.Contains(body, "bob@example.com") {
		t.Errorf("bob, outside the allowed group, got %q:\n%s", title, body)
	}
}

// kubectl with an ID token from kubeoauth, got as kubelogin gets one (authorization
// code with PKCE in the browser, a loopback redirect): the API server, trusting the
// TokenServer through its structured authentication configuration, maps the email
// and groups with the oidc: prefix; RBAC on the group lets alice list pods and
// refuses bob.
func testKubectlOIDC(t *testing.T, caPEM, pin string, passwords map[string]string) {
	var mu sync.Mutex
	codes := map[string]string{}
	loopback := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/callback" {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		codes[r.URL.Query().Get("state")] = r.URL.Query().Get("code")
		mu.Unlock()
		_, _ = w.Write([]byte(`<!doctype html><title>kubectl</title><p id="done">You may close this window.</p>`))
	}))
	defer loopback.Close()
	apply(t, fmt.Sprintf(rpKubectl, loopback.URL+"/callback"))
	for _, c := range []string{"oauthclient/kubectl", "oauthclient/other"} {
		if _, err := kubectl(t.Context(), "-n", rpNS, "wait", "--for=condition=Ready", c, "--timeout=60s"); err != nil {
			t.Fatal(err)
		}
	}

	client := func(id string) oauth2.Config {
		return oauth2.Config{ClientID: id, RedirectURL: loopback.URL + "/callback",
			Scopes:   []string{"openid", "email", "profile", "groups"},
			Endpoint: oauth2.Endpoint{AuthURL: rpIssuer + "/oauth2/auth", TokenURL: rpIssuer + "/oauth2/token", AuthStyle: oauth2.AuthStyleInParams}}
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(caPEM))
	ctx := context.WithValue(t.Context(), oauth2.HTTPClient, &http.Client{Timeout: 10 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}})
	// idTokens signs user in once, in one browser, and gets an ID token for each
	// client: the first asks for the password and consent, the next only consent.
	idTokens := func(user string, clients ...oauth2.Config) []string {
		verifiers := make([]string, len(clients))
		var steps chromedp.Tasks
		for i, cfg := range clients {
			verifiers[i] = oauth2.GenerateVerifier()
			steps = append(steps, chromedp.Navigate(cfg.AuthCodeURL("state-"+cfg.ClientID+"-"+user, oauth2.S256ChallengeOption(verifiers[i]))))
			if i == 0 {
				steps = append(steps, signIn(user, passwords[user]))
			} else {
				steps = append(steps, chromedp.WaitVisible("#approve", chromedp.ByID), chromedp.Click("#approve", chromedp.ByID))
			}
			steps = append(steps, chromedp.WaitVisible("#done", chromedp.ByID))
		}
		if err := chromedp.Run(headless.Chromium(t, chromedp.Flag("ignore-certificate-errors-spki-list", pin)), steps); err != nil {
			t.Fatalf("%s signing in for kubectl: %v", user, err)
		}
		ids := make([]string, 0, len(clients))
		for i, cfg := range clients {
			mu.Lock()
			code := codes["state-"+cfg.ClientID+"-"+user]
			mu.Unlock()
			tok, err := cfg.Exchange(ctx, code, oauth2.VerifierOption(verifiers[i]))
			if err != nil {
				t.Fatalf("%s's code for %s: %v", user, cfg.ClientID, err)
			}
			id, _ := tok.Extra("id_token").(string)
			if id == "" {
				t.Fatalf("%s got no ID token for %s", user, cfg.ClientID)
			}
			ids = append(ids, id)
		}
		return ids
	}
	aliceTokens := idTokens("alice", client(kubectlClientID), client(otherClientID))
	alice, aliceElsewhere := aliceTokens[0], aliceTokens[1]
	bob := idTokens("bob", client(kubectlClientID))[0]
	if aud := audience(t, aliceElsewhere); aud != otherClientID {
		t.Fatalf("alice's ID token for %s has aud %q", otherClientID, aud)
	}

	path := localcluster.AuthenticationConfig(suite.dir)
	// Back to no issuer when the test ends, also when it fails: registered before
	// the write, so that a failed write still restores it.
	t.Cleanup(func() {
		writeAuthenticationConfig(t, path, "apiVersion: apiserver.config.k8s.io/v1\nkind: AuthenticationConfiguration\njwt: []\n")
	})
	writeAuthenticationConfig(t, path, fmt.Sprintf(rpAuthenticationConfig, indent(caPEM, "      ")))

	// The API server reloads the file and starts trusting the issuer once it has
	// fetched its discovery document and keys.
	var who struct {
		Status struct {
			UserInfo struct {
				Username string   `json:"username"`
				Groups   []string `json:"groups"`
			} `json:"userInfo"`
		} `json:"status"`
	}
	eventually(t, 90*time.Second, "kubectl auth whoami with alice's ID token", func() error {
		out, err := kubectlAs(t, alice, "auth", "whoami", "-o", "json")
		if err != nil {
			return err
		}
		return json.Unmarshal([]byte(out), &who)
	})
	if u := who.Status.UserInfo; u.Username != "oidc:alice@example.com" ||
		strings.Join(u.Groups, ",") != "oidc:platform,oidc:admins,system:authenticated" {
		t.Errorf("kubectl auth whoami as alice: %q in %v", u.Username, u.Groups)
	}
	if out, err := kubectlAs(t, alice, "-n", rpNS, "get", "pods"); err != nil || !strings.Contains(out, "whoami-") {
		t.Errorf("alice (group platform) listing pods: %v\n%s", err, out)
	}
	if out, err := kubectlAs(t, alice, "-n", rpNS, "delete", "pods", "--all"); err == nil ||
		!strings.Contains(out, `User "oidc:alice@example.com" cannot delete resource "pods"`) {
		t.Errorf("alice deleting pods with view rights: %v\n%s", err, out)
	}
	out, err := kubectlAs(t, bob, "-n", rpNS, "get", "pods")
	if err == nil || !strings.Contains(out, `Error from server (Forbidden): pods is forbidden: User "oidc:bob@example.com" cannot list resource "pods"`) {
		t.Errorf("bob (group interns) listing pods: %v\n%s", err, out)
	}
	// An ID token the same server issued to another app, alice's own and valid in
	// every other way, is not for the API server: its audience is the other app's.
	if out, err := kubectlAs(t, aliceElsewhere, "auth", "whoami"); err == nil || !strings.Contains(out, "Unauthorized") {
		t.Errorf("alice's ID token for %s: %v\n%s", otherClientID, err, out)
	}
	// A token whose signature does not verify is refused outright.
	if out, err := kubectlAs(t, bob[:len(bob)-4]+"AAAA", "auth", "whoami"); err == nil || !strings.Contains(out, "Unauthorized") {
		t.Errorf("a tampered token: %v\n%s", err, out)
	}
}

// audience is the aud claim of a JWT (one audience, as the token server issues it).
func audience(t *testing.T, jwt string) string {
	t.Helper()
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT: %q", jwt)
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var claims struct {
		Aud json.RawMessage `json:"aud"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	var one string
	if json.Unmarshal(claims.Aud, &one) == nil {
		return one
	}
	var many []string
	_ = json.Unmarshal(claims.Aud, &many)
	return strings.Join(many, ",")
}

// writeAuthenticationConfig replaces the file in one rename, so that the API
// server never reads half of it.
func writeAuthenticationConfig(t *testing.T, path, content string) {
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// kubectlAs runs the real kubectl as a user would with an ID token: the cluster's
// address and CA, and --token, without the admin's client certificate.
func kubectlAs(t *testing.T, token string, args ...string) (string, error) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), suite.kubectl, append([]string{"--kubeconfig", kubeconfig, // #nosec G204 -- the test's own command
		"--server", localcluster.APIServerURL(), "--certificate-authority", filepath.Join(suite.dir, "pki", "ca.crt"),
		"--token", token}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), errors.Join(err, errors.New(string(out)))
	}
	return string(out), nil
}
