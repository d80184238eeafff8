package controllers

import "testing"

// Two spellings of one server's issuer or adminURL are one server to the owner
// sweep: a peer missed by spelling would have its tenants' clients swept.
func TestNormalURL(t *testing.T) {
	same := [][2]string{
		{"https://auth.example.com", "https://auth.example.com/"},
		{"https://auth.example.com", "HTTPS://Auth.Example.COM"},
		{"https://auth.example.com", "https://auth.example.com:443"},
		{"http://auth.example.com", "http://auth.example.com:80/"},
		{"https://auth.example.com/realm", "https://auth.example.com/realm/"},
		{"http://[::1]:4445", "http://[::1]:4445/"},
		{"http://[2001:db8::1]", "http://[2001:db8::1]:80"},
	}
	for _, p := range same {
		if a, b := normalURL(p[0]), normalURL(p[1]); a != b {
			t.Errorf("normalURL(%q) = %q, normalURL(%q) = %q; want equal", p[0], a, p[1], b)
		}
	}
	different := [][2]string{
		{"https://auth.example.com", "http://auth.example.com"},
		{"https://auth.example.com", "https://auth.example.com:8443"},
		{"https://auth.example.com/a", "https://auth.example.com/b"},
		{"https://auth.example.com/Realm", "https://auth.example.com/realm"},
	}
	for _, p := range different {
		if a, b := normalURL(p[0]), normalURL(p[1]); a == b {
			t.Errorf("normalURL(%q) = normalURL(%q) = %q; want different", p[0], p[1], a)
		}
	}
}
