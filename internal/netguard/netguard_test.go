package netguard

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	tests := map[string]struct {
		ip      string
		allow   string
		refused bool
	}{
		"public IPv4":                    {ip: "93.184.216.34"},
		"public IPv6":                    {ip: "2606:2800:220:1:248:1893:25c8:1946"},
		"AWS/GCP/Azure metadata":         {ip: "169.254.169.254", refused: true},
		"metadata as IPv4-mapped IPv6":   {ip: "::ffff:169.254.169.254", refused: true},
		"AWS IPv6 metadata":              {ip: "fd00:ec2::254", refused: true},
		"Alibaba metadata":               {ip: "100.100.100.200", refused: true},
		"link-local IPv6":                {ip: "fe80::1", refused: true},
		"loopback":                       {ip: "127.0.0.1", refused: true},
		"loopback IPv6":                  {ip: "::1", refused: true},
		"unspecified":                    {ip: "0.0.0.0", refused: true},
		"pod network":                    {ip: "10.244.1.7", refused: true},
		"service network":                {ip: "172.20.0.10", refused: true},
		"home network":                   {ip: "192.168.1.1", refused: true},
		"pod network allowed":            {ip: "10.244.1.7", allow: "10.244.0.0/16"},
		"other private still refused":    {ip: "10.1.1.1", allow: "10.244.0.0/16", refused: true},
		"one address allowed":            {ip: "127.0.0.1", allow: "127.0.0.1"},
		"metadata not allowed by 10/8":   {ip: "169.254.169.254", allow: "10.0.0.0/8", refused: true},
		"multicast":                      {ip: "224.0.0.1", refused: true},
		"broadcast":                      {ip: "255.255.255.255", refused: true},
		"metadata through NAT64":         {ip: "64:ff9b::a9fe:a9fe", refused: true},
		"metadata through NAT64, dotted": {ip: "64:ff9b::169.254.169.254", refused: true},
		"pod network through NAT64":      {ip: "64:ff9b::a00:1", refused: true},
		"loopback through NAT64":         {ip: "64:ff9b::7f00:1", refused: true},
		"public through NAT64":           {ip: "64:ff9b::5db8:d822"},
		"allowed range through NAT64":    {ip: "64:ff9b::af4:107", allow: "10.244.0.0/16"},
		"local-use NAT64, public v4":     {ip: "64:ff9b:1::5db8:d822", refused: true},
		"metadata IPv4-compatible":       {ip: "::a9fe:a9fe", refused: true},
		"private IPv4-compatible":        {ip: "::10.0.0.1", refused: true},
		"metadata IPv4-translated":       {ip: "::ffff:0:a9fe:a9fe", refused: true},
		"metadata through 6to4":          {ip: "2002:a9fe:a9fe::1", refused: true},
		"public through 6to4":            {ip: "2002:5db8:d822::1"},
		"Teredo":                         {ip: "2001:0:4136:e378:8000:63bf:3fff:fdd2", refused: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			allow, err := ParseAllow(tc.allow)
			if err != nil {
				t.Fatal(err)
			}
			err = Policy{Allow: allow}.Check(netip.MustParseAddr(tc.ip))
			if got := err != nil; got != tc.refused {
				t.Fatalf("Check(%s) = %v, want refused=%v", tc.ip, err, tc.refused)
			}
			if err != nil && !errors.Is(err, ErrRefused) {
				t.Fatalf("error %v does not wrap ErrRefused", err)
			}
		})
	}
}

func TestParseAllowNamesBadEntry(t *testing.T) {
	if _, err := ParseAllow("10.0.0.0/8, not-a-cidr"); err == nil || !strings.Contains(err.Error(), "not-a-cidr") {
		t.Fatalf("got %v, want an error naming the bad entry", err)
	}
}

// TestTransportRefusesAtDialTime: a name that resolves to loopback is refused when
// connecting, whatever the URL says: the check sees the address dialled, which is
// what a rebinding DNS server cannot fake.
func TestTransportRefusesAtDialTime(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("secret")) }))
	defer srv.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	client := &http.Client{Transport: Policy{}.Transport()}
	for _, url := range []string{srv.URL, "http://localhost:" + port + "/", "http://[::ffff:127.0.0.1]:" + port + "/"} {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			t.Fatalf("GET %s: got %s, want refused", url, resp.Status)
		}
		if !errors.Is(err, ErrRefused) {
			t.Fatalf("GET %s: %v, want ErrRefused", url, err)
		}
	}
	// A redirect from an allowed server to a refused one is refused too.
	allowed := Policy{Allow: []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}}
	redir := httptest.NewServer(http.RedirectHandler("http://[::1]:"+port+"/", http.StatusFound))
	defer redir.Close()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, redir.URL, nil)
	resp, err := (&http.Client{Transport: allowed.Transport()}).Do(req)
	if err == nil {
		_ = resp.Body.Close()
		t.Fatalf("redirect to ::1 followed: %s", resp.Status)
	}
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("redirect: %v, want ErrRefused", err)
	}
	// The same server is reached when its address is allowed.
	req, _ = http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL, nil)
	resp, err = (&http.Client{Transport: allowed.Transport()}).Do(req)
	if err != nil {
		t.Fatalf("allowed address: %v", err)
	}
	_ = resp.Body.Close()
}
