package pages

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseRefusesWhatWouldFail(t *testing.T) {
	tests := map[string]struct {
		overrides map[string]string
		// file the error must name, and a part of its message; "" file: no error.
		file, says string
	}{
		"built-in":          {},
		"a page replaced":   {overrides: map[string]string{"login.html": `{{template "top" .}}<h1>Hi {{.Brand.Name}}</h1>{{template "bottom" .}}`}},
		"the layout alone":  {overrides: map[string]string{Layout: `{{define "top"}}<p>{{.Title}}{{end}}{{define "bottom"}}{{end}}`}},
		"an unknown key":    {overrides: map[string]string{"logn.html": "x"}, file: "logn.html", says: "not a page template; the templates are account.html"},
		"a parse error":     {overrides: map[string]string{"consent.html": "{{if .Client}}"}, file: "consent.html", says: "unexpected EOF"},
		"an unknown field":  {overrides: map[string]string{"account.html": "{{.Usrname}}"}, file: "account.html", says: "can't evaluate field Usrname"},
		"a nil client":      {overrides: map[string]string{"logout.html": "{{.Client.Name}}"}, file: "logout.html", says: "nil pointer"},
		"an escaping error": {overrides: map[string]string{"error.html": `<a href="{{if .Error}}x{{end}}`}, file: "error.html", says: "ends in a non-text context"},
		"a missing layout":  {overrides: map[string]string{Layout: `{{define "top"}}{{end}}`}, file: "account.html", says: `no such template "bottom"`},
		// What the token server renders per request is capped as well.
		"a page too large": {overrides: map[string]string{"error.html": `{{range 3000000000}}xxxxxxxxxx{{end}}`}, file: "error.html",
			says: "renders more than 1024 KiB"},
		"a broken layout": {overrides: map[string]string{Layout: `{{define "top"}}{{.Nope}}{{end}}{{define "bottom"}}{{end}}`}, file: Layout, says: "can't evaluate field Nope"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			s, err := Parse(tc.overrides)
			if tc.file == "" {
				if err != nil {
					t.Fatal(err)
				}
				if s == nil {
					t.Fatal("no set")
				}
				return
			}
			var fe *FileError
			if !errors.As(err, &fe) || fe.Name != tc.file || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("error %v; want one naming %s and saying %q", err, tc.file, tc.says)
			}
		})
	}
}

func TestLoadReadsAMountedConfigMap(t *testing.T) {
	dir := t.TempDir()
	// What the kubelet makes of a ConfigMap volume: the data behind ..data, a link per key.
	data := filepath.Join(dir, "..2026_12_01_00_00_00.000000001")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(data, "error.html"), []byte(`<p id="custom">{{.Error}}</p>`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Base(data), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join("..data", "error.html"), filepath.Join(dir, "error.html")); err != nil {
		t.Fatal(err)
	}
	s, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := s.Execute(&out, "error.html", Data{Error: "<b>"}); err != nil || out.String() != `<p id="custom">&lt;b&gt;</p>` {
		t.Fatalf("error.html rendered %q, %v", out.String(), err)
	}
	if err := os.WriteFile(filepath.Join(dir, "login.html"), []byte("{{.Nope}}"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(dir); err == nil || !strings.HasPrefix(err.Error(), "login.html: ") {
		t.Fatalf("Load with a bad login.html: %v", err)
	}
}

func TestParseBrand(t *testing.T) {
	png := "data:image/png;base64,iVBORw0KGgo="
	tests := map[string]struct {
		name, logo, source string
		bad                bool
	}{
		"none":                     {},
		"https":                    {name: "Example Corp", logo: "https://cdn.example.com:8443/a/logo.svg?v=2", source: "https://cdn.example.com:8443"},
		"inline png":               {logo: png, source: "data:"},
		"inline svg":               {logo: "data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=", source: "data:"},
		"http":                     {logo: "http://example.com/logo.png", bad: true},
		"javascript":               {logo: "javascript:alert(1)", bad: true},
		"user info":                {logo: "https://evil.example@example.com/logo.png", bad: true},
		"a quote":                  {logo: `https://example.com/"onerror="alert(1)`, bad: true},
		"inline html":              {logo: "data:text/html;base64,PHNjcmlwdD4=", bad: true},
		"inline svg as text":       {logo: "data:image/svg+xml,<svg onload=alert(1)>", bad: true},
		"too long":                 {logo: png + strings.Repeat("A", MaxLogoURL), bad: true},
		"too long in bytes":        {logo: "https://cdn.example.com/" + strings.Repeat("é", MaxLogoURL/2), bad: true},
		"a name too long":          {name: strings.Repeat("é", MaxDisplayName+1), bad: true},
		"a name of two lines":      {name: "Example\nCorp", bad: true},
		"a line separator":         {name: "Example\u2028Corp", bad: true},
		"a paragraph sep.":         {name: "Example\u2029Corp", bad: true},
		"a right-to-left override": {name: "\u202eproC elpmaxE", bad: true},
		"an isolate":               {name: "Example \u2067Corp\u2069", bad: true},
		"a name in Hebrew":         {name: "דוגמה בע״מ", source: ""},
		"an empty host":            {logo: "https:///logo.png", bad: true},
		"a dot for a host":         {logo: "https://../logo.png", bad: true},
		"a dash for a host":        {logo: "https://-/logo.png", bad: true},
		"a port too large":         {logo: "https://cdn.example.com:99999/logo.png", bad: true},
		"port 65535":               {logo: "https://cdn.example.com:65535/logo.png", source: "https://cdn.example.com:65535"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			b, err := ParseBrand(tc.name, tc.logo)
			if tc.bad {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := b.ImageSource(); got != tc.source {
				t.Errorf("image source %q, want %q", got, tc.source)
			}
		})
	}
}
