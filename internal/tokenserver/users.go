package tokenserver

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/bcrypt"
)

// LoadUsers reads a users file: one "username:bcrypt-hash" per line, # comments
// allowed (the format of `htpasswd -B`). The operator mounts it from a Secret.
func LoadUsers(path string) (map[string][]byte, error) {
	f, err := os.Open(path) // #nosec G304 -- the operator's mounted users file
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	users := map[string][]byte{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok || name == "" {
			return nil, fmt.Errorf("%s line %d: want username:bcrypt-hash", path, n)
		}
		if len(name) > maxUsernameLen {
			// The login page refuses such a name before checking anything.
			return nil, fmt.Errorf("%s line %d: the username has %d bytes; at most %d can sign in", path, n, len(name), maxUsernameLen)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("%s line %d (%s): not a bcrypt hash: %w", path, n, name, err)
		}
		users[name] = []byte(hash)
	}
	return users, sc.Err()
}

// userSet is one reading of the users file.
type userSet struct {
	hashes map[string][]byte
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
	return &userSet{hashes: hashes, dummy: dummy}, nil
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
	hashes, err := LoadUsers(u.path)
	if err != nil {
		return err
	}
	set, err := newUserSet(hashes)
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
