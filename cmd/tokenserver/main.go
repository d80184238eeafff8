// Command tokenserver is kubeoauth's bundled OAuth 2.0 / OpenID Connect server.
//
//	tokenserver serve           run the server (flags or KUBEOAUTH_* environment)
//	tokenserver migrate up      apply pending migrations (--expand-only for blue-green)
//	tokenserver migrate status  list applied and pending migrations
//	tokenserver migrate plan    print, as JSON, the schema range this binary serves on;
//	                            with a DSN, how it can take over that database (Shared, Copy, Refused)
//	tokenserver db copy         copy the database for a Copy upgrade (docs/upgrades.md "Copy and replay")
//	tokenserver db replay       replay the rows written since, until SIGTERM
//	tokenserver db cleanup      remove what a Copy upgrade added to a database
//	tokenserver keygen          print a new signing key (PEM) for --alg ES256|RS256
//	tokenserver version         print the build's version
//
// Every flag can also be set through the environment: --admin-token-file is
// KUBEOAUTH_ADMIN_TOKEN_FILE, and so on. docs/tokenserver.md lists them.
package main

import (
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"

	"github.com/kubeoauth/kubeoauth/internal/netguard"
	"github.com/kubeoauth/kubeoauth/internal/oauth"
	"github.com/kubeoauth/kubeoauth/internal/signingkey"
	"github.com/kubeoauth/kubeoauth/internal/store/postgres"
	"github.com/kubeoauth/kubeoauth/internal/tokenserver"
	"github.com/kubeoauth/kubeoauth/internal/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "tokenserver:", err)
		os.Exit(exitCode(err))
	}
}

const usage = `usage: tokenserver serve|migrate up|migrate status|migrate plan|db copy|db replay|db cleanup|keygen|verify|version [flags]`

// variant is what a test build changes (variant_*.go, each built with its own tag;
// docs/upgrades.md "Test builds"). A production build leaves it empty.
var variant struct {
	// beforeServe runs before serve reads its flags; its error ends the process.
	beforeServe func() error
	// tokenMiddleware wraps the token endpoint, inside its metrics.
	tokenMiddleware func(http.Handler) http.Handler
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "serve":
		if variant.beforeServe != nil {
			if err := variant.beforeServe(); err != nil {
				return err
			}
		}
		return serve(ctx, args[1:], stderr)
	case "migrate":
		if len(args) < 2 {
			return errors.New("usage: tokenserver migrate up|status|plan")
		}
		return migrate(ctx, args[1], args[2:], stdout)
	case "verify":
		return verifyCmd(ctx, args[1:], stdout)
	case "db":
		return dbCmd(ctx, args[1:], stdout, stderr)
	case "version":
		_, err := fmt.Fprintln(stdout, version.Version)
		return err
	case "keygen":
		fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
		alg := fs.String("alg", signingkey.ES256, "Signing algorithm: ES256 or RS256.")
		if err := parse(fs, args[1:]); err != nil {
			return err
		}
		pem, err := signingkey.Generate(*alg)
		if err != nil {
			return err
		}
		_, err = stdout.Write(pem)
		return err
	default:
		return fmt.Errorf("unknown command %q\n%s", args[0], usage)
	}
}

// parse parses flags, then fills every flag not given on the command line from the
// environment variable KUBEOAUTH_<FLAG_NAME>.
func parse(fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(os.Stdout)
			fmt.Printf("usage: tokenserver %s [flags]; each flag can be set as KUBEOAUTH_<FLAG_NAME> too\n", fs.Name())
			fs.PrintDefaults()
		}
		return err
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		env := "KUBEOAUTH_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok && !set[f.Name] && err == nil {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, e)
			}
		}
	})
	return err
}

// errNoDSN: neither --dsn nor --dsn-file was given.
var errNoDSN = errors.New("--dsn or --dsn-file is required")

func dsnFlags(fs *flag.FlagSet) func() (string, error) {
	dsn := fs.String("dsn", "", "PostgreSQL DSN (a URL or key=value list).")
	dsnFile := fs.String("dsn-file", "", "File holding the PostgreSQL DSN (a mounted Secret); overrides --dsn.")
	return func() (string, error) {
		if *dsnFile != "" {
			return tokenserver.ReadSecretFile(*dsnFile)
		}
		if *dsn == "" {
			return "", errNoDSN
		}
		return *dsn, nil
	}
}

// openDSN opens the database the DSN flags name, with a small pool: the one-shot
// commands (migrate, db cleanup) run a statement at a time.
func openDSN(getDSN func() (string, error)) (*sql.DB, error) {
	dsn, err := getDSN()
	if err != nil {
		return nil, err
	}
	return postgres.OpenDB(dsn, 2)
}

// lineLog writes each log line of a store operation (a migration applied, a
// trigger removed) to w.
func lineLog(w io.Writer) func(format string, a ...any) {
	return func(format string, a ...any) { _, _ = fmt.Fprintf(w, format+"\n", a...) }
}

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	getDSN := dsnFlags(fs)
	issuer := fs.String("issuer", "", "Public URL of this server, e.g. https://auth.example.com (required).")
	listen := fs.String("listen", ":4444", "Address of the public OAuth endpoints.")
	adminListen := fs.String("admin-listen", ":4445", "Address of the admin API.")
	metricsListen := fs.String("metrics-listen", ":4446",
		"Address of Prometheus /metrics, kept off the public listener; empty turns them off.")
	adminTokenFile := fs.String("admin-token-file", "", "File holding the admin API bearer token (required).")
	adminCertFile := fs.String("admin-tls-cert-file", "",
		"PEM certificate (chain) the admin API serves TLS with; with --admin-tls-key-file. Without both, the admin API is clear text.")
	adminKeyFile := fs.String("admin-tls-key-file", "", "PEM private key of --admin-tls-cert-file.")
	jwksAllow := fs.String("jwks-fetch-allow", "",
		"Comma-separated CIDRs a client's jwks_uri may resolve to although internal (loopback, link-local, private); default none.")
	keyFile := fs.String("signing-key-file", "", "PEM private key that signs ID tokens and JWT access tokens (required).")
	prevKeyFile := fs.String("previous-signing-key-file", "", "The previous signing key, still published in JWKS after a rotation.")
	alg := fs.String("signing-algorithm", signingkey.ES256, "ES256 or RS256; the signing key must be of that kind (EC P-256 or RSA).")
	hmacFile := fs.String("hmac-secret-file", "",
		"File holding the secret (32+ bytes) that signs opaque tokens; shared by all replicas (required).")
	hashKeyFile := fs.String("secret-hash-key-file", "",
		"File holding the key (32+ bytes, shared by all replicas) that client-secret hashes are made with (HMAC-SHA256); "+
			"empty: a key derived from the HMAC secret.")
	format := fs.String("access-token-format", oauth.FormatOpaque, "Access tokens: opaque or jwt (RFC 9068).")
	atl := fs.Duration("access-token-lifespan", time.Hour, "Access token lifespan.")
	rtl := fs.Duration("refresh-token-lifespan", 720*time.Hour, "Refresh token lifespan.")
	idl := fs.Duration("id-token-lifespan", time.Hour, "ID token lifespan.")
	acl := fs.Duration("authorize-code-lifespan", 10*time.Minute, "Authorization code lifespan.")
	grace := fs.Duration("refresh-grace-period", 0, "How long a rotated refresh token still works (0 to 5m).")
	shutdownDelay := fs.Duration("shutdown-delay", 5*time.Second,
		"On SIGTERM, how long to go on serving, not ready, before no longer accepting connections.")
	shutdown := fs.Duration("shutdown-timeout", 20*time.Second, "On SIGTERM, how long in-flight requests may take before exit.")
	maxConnAge := fs.Duration("max-connection-age", 30*time.Second, "A public keep-alive connection older than this "+
		"(less up to 10% jitter) is closed after its next response, so that clients move to the pods that serve now "+
		"(blue-green promotion, scale-out); 0 keeps connections as long as the client does.")
	janitor := fs.Duration("janitor-interval", time.Minute, "How often expired rows are deleted.")
	usersFile := fs.String("users-file", "", "Who may sign in: username:bcrypt-hash lines (htpasswd -B) or a YAML list "+
		"of users with name, email and groups, mounted from a Secret.")
	upstreamFile := fs.String("upstream-oidc-file", "", "JSON settings of an OpenID provider people sign in through "+
		`(issuer, clientID, scopes, claims, allowedGroups, allowedEmailDomains, usernamePrefix, groupsPrefix, fetchAllow, `+
		`displayName; docs/integrations/upstream-oidc.md); with or without --users-file.`)
	upstreamSecret := fs.String("upstream-oidc-client-secret-file", "",
		"File holding the client secret at the upstream OpenID provider (a mounted Secret); needed with --upstream-oidc-file.")
	upstreamCA := fs.String("upstream-oidc-ca-file", "",
		"PEM CA certificates the upstream OpenID provider's TLS certificate is checked against, besides the system's roots.")
	scopesFile := fs.String("scope-descriptions-file", "",
		`JSON object of scope descriptions for the consent page: {"zones.read": "Read your DNS zones"}.`)
	displayName := fs.String("display-name", "", "Name shown in every page's title and header, and as the logo's alt text.")
	logoURL := fs.String("logo-url", "", "Logo shown at the top of every page: an https URL, or a data:image/png;base64, "+
		"or data:image/svg+xml;base64, URL.")
	templatesDir := fs.String("templates-dir", "", "Directory of templates (a mounted ConfigMap) that replace the built-in "+
		"ones of the same file name, such as login.html; one that cannot be used fails the start.")
	requirePKCE := fs.Bool("require-pkce", true,
		"Require PKCE (S256) from every authorization-code client, as RFC 9700 asks; false lets confidential legacy apps skip it.")
	requirePAR := fs.Bool("require-pushed-authorization-requests", false,
		"Refuse authorization requests not pushed first to /oauth2/par (RFC 9126).")
	deviceInterval := fs.Duration("device-poll-interval", 0,
		"How long a device waits between polls in the device grant (RFC 8628), in whole seconds; 0 means 5s.")
	deviceLifespan := fs.Duration("device-code-lifespan", 0, "How long a device code and its user code live; 0 means 10m.")
	perUser := fs.Int("login-failures-per-user", tokenserver.DefaultLoginThrottle.PerUser,
		"Failed sign-ins a username may have in a row before it is throttled.")
	perIP := fs.Int("login-failures-per-ip", tokenserver.DefaultLoginThrottle.PerIP,
		"Failed sign-ins a client address may have in a row before it is throttled.")
	refill := fs.Duration("login-failure-refill", tokenserver.DefaultLoginThrottle.Refill,
		"Once throttled, a username or address earns one more attempt per this interval.")
	maxLogins := fs.Int("max-concurrent-logins", 0, "Password checks (bcrypt) that may run at once; 0 means one per CPU.")
	ipHeader := fs.String("client-ip-header", "",
		"Header in which the trusted proxy in front passes the client's address (e.g. X-Forwarded-For; its last "+
			"entry is used) for per-address throttling; empty uses the connection's peer. Needs --client-ip-trusted-proxies.")
	ipTrusted := fs.String("client-ip-trusted-proxies", "",
		"Comma-separated CIDRs of the proxies (ingress) whose --client-ip-header is believed; from any other peer "+
			"the header is ignored and the peer's address counts.")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error.")
	pprofListen := fs.String("pprof-listen", "", "Address for Go's /debug/pprof profiles; empty (the default) turns them off.")
	if err := parse(fs, args); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	tuneGC(ctx, memlimit.FromCgroup, log)
	switch {
	case *issuer == "":
		return errors.New("--issuer is required")
	case *adminTokenFile == "":
		return errors.New("--admin-token-file is required")
	case *keyFile == "":
		return errors.New("--signing-key-file is required")
	case *hmacFile == "":
		return errors.New("--hmac-secret-file is required")
	case *alg != signingkey.ES256 && *alg != signingkey.RS256:
		return fmt.Errorf("--signing-algorithm %q: want ES256 or RS256", *alg)
	case *format != oauth.FormatOpaque && *format != oauth.FormatJWT:
		return fmt.Errorf("--access-token-format %q: want opaque or jwt", *format)
	case *perUser < 1 || *perIP < 1:
		return errors.New("--login-failures-per-user and --login-failures-per-ip must be at least 1")
	case *refill <= 0:
		return errors.New("--login-failure-refill must be positive")
	case (*adminCertFile == "") != (*adminKeyFile == ""):
		return errors.New("--admin-tls-cert-file and --admin-tls-key-file go together")
	}
	allow, proxies, err := addressFlags(*jwksAllow, *ipHeader, *ipTrusted)
	if err != nil {
		return err
	}
	dsn, err := getDSN()
	if err != nil {
		return err
	}
	adminToken, err := tokenserver.ReadSecretFile(*adminTokenFile)
	if err != nil {
		return fmt.Errorf("--admin-token-file: %w", err)
	}
	hmacSecret, err := tokenserver.ReadSecretFile(*hmacFile)
	if err != nil {
		return fmt.Errorf("--hmac-secret-file: %w", err)
	}
	hashKey, err := readHashKey(*hashKeyFile)
	if err != nil {
		return err
	}
	scopes, upstream, err := loginFiles(*scopesFile, *upstreamFile, *upstreamSecret, *upstreamCA)
	if err != nil {
		return err
	}
	if *pprofListen != "" {
		go servePprof(*pprofListen, log)
	}
	pub, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	adm, err := net.Listen("tcp", *adminListen)
	if err != nil {
		_ = pub.Close()
		return err
	}
	if *adminCertFile != "" {
		// The certificate is read once: the operator renews it into the Secret, and
		// the new Secret changes the pods' config hash, which rolls them.
		cert, err := tls.LoadX509KeyPair(*adminCertFile, *adminKeyFile)
		if err != nil {
			_, _ = pub.Close(), adm.Close()
			return fmt.Errorf("--admin-tls-cert-file: %w", err)
		}
		adm = tls.NewListener(adm, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	}
	var met net.Listener
	if *metricsListen != "" {
		if met, err = net.Listen("tcp", *metricsListen); err != nil {
			_ = pub.Close()
			_ = adm.Close()
			return err
		}
	}
	// Serve closes them on its way out, but not when it refuses to start.
	defer closeListeners(pub, adm, met)
	return tokenserver.Serve(ctx, tokenserver.Options{
		DSN: dsn, Issuer: *issuer, PublicListener: pub, AdminListener: adm, MetricsListener: met, AdminToken: adminToken,
		SigningKeyFile: *keyFile, PreviousSigningKeyFile: *prevKeyFile, SigningAlgorithm: *alg, HMACSecret: []byte(hmacSecret),
		SecretHashKey:     []byte(hashKey),
		AccessTokenFormat: *format, AccessTokenLifespan: *atl, RefreshTokenLifespan: *rtl, IDTokenLifespan: *idl,
		AuthorizeCodeLifespan: *acl, RefreshGracePeriod: *grace, ShutdownTimeout: *shutdown, ShutdownDelay: *shutdownDelay,
		JanitorInterval: *janitor, UsersFile: *usersFile, Upstream: upstream, ScopeDescriptions: scopes, Log: log, JWKSFetchAllow: allow,
		DisplayName: *displayName, LogoURL: *logoURL, TemplatesDir: *templatesDir,
		OptionalPKCE: !*requirePKCE, MaxConcurrentLogins: *maxLogins, ClientIPHeader: *ipHeader, ClientIPTrustedProxies: proxies,
		RequirePAR:      *requirePAR,
		LoginThrottle:   tokenserver.LoginThrottle{PerUser: *perUser, PerIP: *perIP, Refill: *refill},
		TokenMiddleware: variant.tokenMiddleware, MaxConnectionAge: *maxConnAge,
		DeviceInterval: *deviceInterval, DeviceCodeLifespan: *deviceLifespan,
	})
}

func closeListeners(ls ...net.Listener) {
	for _, l := range ls {
		if l != nil {
			_ = l.Close()
		}
	}
}

// addressFlags parses --jwks-fetch-allow and --client-ip-trusted-proxies, which
// --client-ip-header needs.
func addressFlags(jwksAllow, header, trusted string) (allow, proxies []netip.Prefix, err error) {
	if allow, err = netguard.ParseAllow(jwksAllow); err != nil {
		return nil, nil, fmt.Errorf("--jwks-fetch-allow: %w", err)
	}
	if proxies, err = netguard.ParseAllow(trusted); err != nil {
		return nil, nil, fmt.Errorf("--client-ip-trusted-proxies: %w", err)
	}
	if header != "" && len(proxies) == 0 {
		return nil, nil, fmt.Errorf("--client-ip-header %s needs --client-ip-trusted-proxies: the CIDRs of the proxies (ingress) "+
			"allowed to set it; anyone else could set it to spread sign-in guesses over made-up addresses", header)
	}
	return allow, proxies, nil
}

// readHashKey reads --secret-hash-key-file; no file means a derived key.
func readHashKey(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	key, err := tokenserver.ReadSecretFile(path)
	if err != nil {
		return "", fmt.Errorf("--secret-hash-key-file: %w", err)
	}
	if len(key) < 32 {
		return "", fmt.Errorf("--secret-hash-key-file %s: the key must be at least 32 bytes", path)
	}
	return key, nil
}

func migrate(ctx context.Context, sub string, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("migrate "+sub, flag.ContinueOnError)
	getDSN := dsnFlags(fs)
	expandOnly := fs.Bool("expand-only", false, "migrate up: stop before the first contract migration, "+
		"except those of the serving version (--serving-schema).")
	servingSchema := fs.Int("serving-schema", 0, "migrate plan and migrate up --expand-only: the latest migration the "+
		"serving version knows (its `migrate plan` latest); its own contract migrations still pending run first. "+
		"0: unknown, every pending contract waits.")
	lockTimeout := fs.Duration("lock-timeout", postgres.DefaultLockTimeout, "migrate up: the longest a migration waits "+
		"for a lock before it gives up and retries (a few times), so that it never stalls token writes behind a long transaction.")
	termLog := fs.String("termination-log", defaultTerminationLog, "migrate plan with a DSN: also write the report "+
		"(or the error) to this file, the container's termination message, if it exists (Kubernetes creates it).")
	if err := parse(fs, args); err != nil {
		return err
	}
	ms := postgres.Migrations()
	if sub == "plan" {
		dsn, err := getDSN()
		if errors.Is(err, errNoDSN) {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(postgres.NewPlan(ms))
		}
		return planUpgrade(ctx, ms, dsn, err, *servingSchema, *termLog, stdout)
	}
	if sub != "up" && sub != "status" {
		return fmt.Errorf("unknown migrate command %q: want up, status or plan", sub)
	}
	db, err := openDSN(getDSN)
	if err != nil {
		return err
	}
	defer func() { _ = db.Close() }()
	if sub == "up" {
		ran, err := postgres.Migrate(ctx, db, ms, postgres.MigrateOptions{ExpandOnly: *expandOnly,
			ServingSchema: *servingSchema, LockTimeout: *lockTimeout,
			Log: lineLog(stdout)})
		if err != nil {
			return err
		}
		if len(ran) == 0 {
			_, _ = fmt.Fprintln(stdout, "schema is up to date")
		}
		return nil
	}
	applied, err := postgres.Applied(ctx, db)
	if err != nil {
		return err
	}
	done := map[int]postgres.AppliedMigration{}
	for _, a := range applied {
		done[a.Version] = a
	}
	for _, m := range ms {
		state := "pending"
		if a, ok := done[m.Version]; ok {
			state = "applied " + a.AppliedAt.UTC().Format(time.RFC3339)
		}
		_, _ = fmt.Fprintf(stdout, "%04d_%-24s %-8s %s\n", m.Version, m.Name, m.Kind, state)
	}
	if err := postgres.CheckSchema(ms, applied); err != nil {
		_, _ = fmt.Fprintln(stdout, "this binary cannot serve on this schema:", err)
	}
	return nil
}

// defaultTerminationLog is where Kubernetes reads a container's termination message
// (terminationMessagePath's default).
const defaultTerminationLog = "/dev/termination-log"

// planUpgrade reports how this binary can take over the database at dsn (dsnErr:
// why there is no DSN), on stdout and in the termination message, where the
// operator's plan Job reads it. Every mode exits 0, for the operator reads the mode;
// only a plan that could not be made is an error, and its text is the message.
func planUpgrade(ctx context.Context, ms []postgres.Migration, dsn string, dsnErr error, servingSchema int, termLog string,
	stdout io.Writer) error {
	plan, err := func() (postgres.UpgradePlan, error) {
		if dsnErr != nil {
			return postgres.UpgradePlan{}, dsnErr
		}
		db, err := postgres.OpenDB(dsn, 1)
		if err != nil {
			return postgres.UpgradePlan{}, err
		}
		defer func() { _ = db.Close() }()
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		applied, err := postgres.ReadApplied(ctx, db)
		if err != nil {
			return postgres.UpgradePlan{}, fmt.Errorf("reading the database's schema_migrations: %w", err)
		}
		return postgres.PlanUpgradeFrom(ms, applied, servingSchema), nil
	}()
	if err != nil {
		writeTerminationLog(termLog, []byte("migrate plan: "+err.Error()))
		return err
	}
	out, err := json.Marshal(plan)
	if err != nil {
		return err
	}
	writeTerminationLog(termLog, out)
	_, err = fmt.Fprintf(stdout, "%s\n", out)
	return err
}

// writeTerminationLog writes a container's termination message (migrate plan's
// report, verify's summary), which the operator reads from the pod's status.
// Kubernetes creates the file; when there is none (a run by hand) or it cannot be
// written, nothing is written, so a run as root leaves no file in /dev: stdout has
// the same.
func writeTerminationLog(path string, msg []byte) {
	if path == "" {
		return
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0) // #nosec G304 G703 -- a path the pod spec names
	if err != nil {
		return
	}
	_, _ = f.Write(msg)
	_ = f.Close()
}

// servePprof serves Go's profiles on their own address, for benchmarks and debugging.
func servePprof(addr string, log *slog.Logger) {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		log.Error("pprof listener", "err", err)
	}
}

// loginFiles reads the consent page's scope descriptions and the upstream provider's
// settings, client secret and CA certificates, each when named.
func loginFiles(scopesFile, upstreamFile, upstreamSecret, upstreamCA string) (map[string]string, *tokenserver.UpstreamOIDC, error) {
	var scopes map[string]string
	if scopesFile != "" {
		data, err := os.ReadFile(scopesFile) // #nosec G304 -- a path the operator mounts
		if err != nil {
			return nil, nil, fmt.Errorf("--scope-descriptions-file: %w", err)
		}
		if err := json.Unmarshal(data, &scopes); err != nil {
			return nil, nil, fmt.Errorf("--scope-descriptions-file %s: want a JSON object of strings: %w", scopesFile, err)
		}
	}
	if upstreamFile == "" {
		return scopes, nil, nil
	}
	upstream, err := tokenserver.LoadUpstreamOIDC(upstreamFile, upstreamSecret, upstreamCA)
	if err != nil {
		return nil, nil, fmt.Errorf("--upstream-oidc-file: %w", err)
	}
	return scopes, upstream, nil
}
