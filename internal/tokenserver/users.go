package tokenserver

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/bcrypt"
	"sigs.k8s.io/yaml"

	"github.com/kubeoauth/kubeoauth/internal/oauth"
)

// User is one entry of the users file.
type User struct {
	// Hash is the user's bcrypt password hash.
	Hash []byte
	oauth.Identity
}

// LoadUsers reads a users file in either of two formats, told apart by content:
// htpasswd lines, one "username:bcrypt-hash" per line with # comments (the output of
// `htpasswd -B`), or a YAML (or JSON) list of users with their attributes for the
// claims, for example
//
//   - username: alice
//     passwordHash: $2y$10$...
//     name: Alice Liddell
//     email: alice@example.com
//     emailVerified: true
//     groups: [platform, admins]
//
// The operator mounts it from a Secret; docs/identity.md describes both formats.
func LoadUsers(path string) (map[string]User, error) {
	data, err := os.ReadFile(path) // #nosec G304 -- the operator's mounted users file
	if err != nil {
		return nil, err
	}
	if structuredUsers(data) {
		return parseUserList(path, data)
	}
	return parseHtpasswd(path, data)
}

// structuredUsers says whether data is a YAML or JSON list: its first line that is
// not blank or a comment starts one. An htpasswd line starts with a username, and a
// username beginning with "- " or "[" is not one anybody writes.
func structuredUsers(data []byte) bool {
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		return line == "-" || strings.HasPrefix(line, "- ") || strings.HasPrefix(line, "[")
	}
	return false
}

func parseHtpasswd(path string, data []byte) (map[string]User, error) {
	users := map[string]User{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok || name == "" {
			return nil, fmt.Errorf("%s line %d: want username:bcrypt-hash", path, n)
		}
		if err := checkUsername(name); err != nil {
			return nil, fmt.Errorf("%s line %d: %w", path, n, err)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("%s line %d (%s): not a bcrypt hash: %w", path, n, name, err)
		}
		users[name] = User{Hash: []byte(hash)}
	}
	return users, sc.Err()
}

// userEntry is one user of the structured format, as a platform team writes it.
type userEntry struct {
	Username      string   `json:"username"`
	PasswordHash  string   `json:"passwordHash"`
	Name          string   `json:"name,omitempty"`
	Email         string   `json:"email,omitempty"`
	EmailVerified bool     `json:"emailVerified,omitempty"`
	Groups        []string `json:"groups,omitempty"`
}

func parseUserList(path string, data []byte) (map[string]User, error) {
	var entries []userEntry
	// Strict: a misspelt field (emailVerfied) would otherwise be dropped in silence.
	if err := yaml.UnmarshalStrict(data, &entries); err != nil {
		return nil, fmt.Errorf("%s: not a list of users: %w", path, err)
	}
	users := make(map[string]User, len(entries))
	for i, e := range entries {
		where := fmt.Sprintf("%s: users[%d]", path, i)
		if e.Username != "" {
			where += " (" + e.Username + ")"
		}
		u, err := e.user()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if _, dup := users[e.Username]; dup {
			return nil, fmt.Errorf("%s: username: %q is listed twice", where, e.Username)
		}
		users[e.Username] = u
	}
	return users, nil
}

// user checks one entry, naming the field at fault.
func (e userEntry) user() (User, error) {
	if e.Username == "" {
		return User{}, errors.New("username: required")
	}
	if strings.Contains(e.Username, ":") {
		return User{}, errors.New("username: must not contain a colon")
	}
	if err := checkUsername(e.Username); err != nil {
		return User{}, fmt.Errorf("username: %w", err)
	}
	if e.PasswordHash == "" {
		return User{}, errors.New("passwordHash: required (a bcrypt hash, as htpasswd -B makes)")
	}
	if _, err := bcrypt.Cost([]byte(e.PasswordHash)); err != nil {
		return User{}, fmt.Errorf("passwordHash: not a bcrypt hash: %w", err)
	}
	if e.Email != "" {
		if a, err := mail.ParseAddress(e.Email); err != nil || a.Address != e.Email {
			return User{}, fmt.Errorf("email: %q is not an email address (write just the address, like alice@example.com)", e.Email)
		}
	} else if e.EmailVerified {
		return User{}, errors.New("emailVerified: true without an email")
	}
	for j, g := range e.Groups {
		if strings.TrimSpace(g) == "" {
			return User{}, fmt.Errorf("groups[%d]: empty", j)
		}
		if slices.Contains(e.Groups[:j], g) {
			return User{}, fmt.Errorf("groups[%d]: %q is listed twice", j, g)
		}
	}
	return User{Hash: []byte(e.PasswordHash), Identity: oauth.Identity{Name: e.Name, Email: e.Email,
		EmailVerified: e.EmailVerified, Groups: e.Groups}}, nil
}

func checkUsername(name string) error {
	if len(name) > maxUsernameLen {
		// The login page refuses such a name before checking anything.
		return fmt.Errorf("the username has %d bytes; at most %d can sign in", len(name), maxUsernameLen)
	}
	return nil
}

// userSet is one reading of the users file.
type userSet struct {
	hashes map[string][]byte
	// identities are the users' attributes, for the claims; a user from an htpasswd
	// line has none.
	identities map[string]*oauth.Identity
	// dummy is compared against for unknown usernames. It has the highest cost in the
	// file, so an unknown name takes as long to refuse as a known one with a wrong
	// password, and answer times do not tell which usernames exist.
	dummy []byte
}

func newUserSet(hashes map[string][]byte) (*userSet, error) {
	cost := bcrypt.DefaultCost
	if len(hashes) > 0 {
		cost = bcrypt.MinCost
	}
	for _, h := range hashes {
		if c, err := bcrypt.Cost(h); err == nil && c > cost {
			cost = c
		}
	}
	dummy, err := bcrypt.GenerateFromPassword([]byte("no such user"), cost)
	if err != nil {
		return nil, err
	}
	return &userSet{hashes: hashes, identities: map[string]*oauth.Identity{}, dummy: dummy}, nil
}

func newUserSetOf(users map[string]User) (*userSet, error) {
	hashes := make(map[string][]byte, len(users))
	for name, u := range users {
		hashes[name] = u.Hash
	}
	set, err := newUserSet(hashes)
	if err != nil {
		return nil, err
	}
	for name, u := range users {
		set.identities[name] = &u.Identity
	}
	return set, nil
}

// Users is who may sign in. A file is read again whenever it changes (the kubelet
// replaces a mounted Secret's files in place), so removing a user or changing a
// password reaches a running server: their sign-in sessions end on their next request.
type Users struct {
	path string
	log  *slog.Logger
	mu   sync.Mutex
	stat os.FileInfo
	cur  atomic.Pointer[userSet]
}

// StaticUserList serves a fixed set of users with their attributes.
func StaticUserList(users map[string]User) (*Users, error) {
	set, err := newUserSetOf(users)
	if err != nil {
		return nil, err
	}
	u := &Users{}
	u.cur.Store(set)
	return u, nil
}

// StaticUsers serves a fixed set of users (username to bcrypt hash).
func StaticUsers(hashes map[string][]byte) (*Users, error) {
	set, err := newUserSet(hashes)
	if err != nil {
		return nil, err
	}
	u := &Users{}
	u.cur.Store(set)
	return u, nil
}

// OpenUsers reads a users file and follows its changes; an empty path means nobody
// may sign in.
func OpenUsers(path string, log *slog.Logger) (*Users, error) {
	if path == "" {
		return StaticUsers(map[string][]byte{})
	}
	u := &Users{path: path, log: log}
	if err := u.reload(); err != nil {
		return nil, err
	}
	return u, nil
}

func (u *Users) reload() error {
	st, err := os.Stat(u.path)
	if err != nil {
		return err
	}
	users, err := LoadUsers(u.path)
	if err != nil {
		return err
	}
	set, err := newUserSetOf(users)
	if err != nil {
		return err
	}
	u.stat = st
	u.cur.Store(set)
	return nil
}

// current returns the users as the file now says. A stat per sign-in check is cheap
// next to the request; a file that fails to parse keeps the last good reading (and
// says so in the log), so a bad edit does not lock everyone out.
func (u *Users) current() *userSet {
	if u.path == "" {
		return u.cur.Load()
	}
	st, err := os.Stat(u.path)
	u.mu.Lock()
	defer u.mu.Unlock()
	if err == nil && os.SameFile(st, u.stat) && st.ModTime().Equal(u.stat.ModTime()) && st.Size() == u.stat.Size() {
		return u.cur.Load()
	}
	if err := u.reload(); err != nil {
		u.log.Error("users file: keeping the last good reading", "path", u.path, "err", err)
		u.stat = st // do not retry on every request until the file changes again
	} else {
		u.log.Info("users file reloaded", "path", u.path, "users", len(u.cur.Load().hashes))
	}
	return u.cur.Load()
}

// configured says whether people may sign in with a password: a users file is
// named, or users were given.
func (u *Users) configured() bool {
	return u.path != "" || len(u.cur.Load().hashes) > 0
}

// identity is what the users file says of subject now, for the claims; nil when it
// says nothing.
func (s *Server) identity(subject string) *oauth.Identity {
	return s.cfg.Users.current().identities[subject]
}

// fingerprint binds a sign-in session to the user's current password hash: when the
// user is removed or their hash changes, the fingerprint no longer matches and the
// session ends. Keyed, so the cookie says nothing about the hash.
func (s *Server) fingerprint(user string, hash []byte) string {
	m := hmac.New(sha256.New, append([]byte("kubeoauth-user:"), s.cfg.CookieSecret...))
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write(hash)
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:18])
}
