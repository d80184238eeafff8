package pages

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

//go:embed templates/*.html
var builtinFS embed.FS

// Layout defines the "top" and "bottom" templates every page includes: the one
// file that is not a page of its own.
const Layout = "layout.html"

// builtin is every built-in template by file name.
var builtin = func() map[string]string {
	entries, err := fs.ReadDir(builtinFS, "templates")
	if err != nil {
		panic(err)
	}
	m := map[string]string{}
	for _, e := range entries {
		b, err := fs.ReadFile(builtinFS, "templates/"+e.Name())
		if err != nil {
			panic(err)
		}
		m[e.Name()] = string(b)
	}
	return m
}()

// Names lists the template files, sorted: the file names a TokenServer's templates
// may replace, any of them, including those of pages added later.
func Names() []string {
	names := make([]string, 0, len(builtin))
	for n := range builtin {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Set is a parsed set of pages: each page file with the layout, so that a page's
// own definitions never leak into another page.
type Set struct {
	pages map[string]*template.Template
}

// FileError is a template that cannot be used, by file name (a ConfigMap key).
type FileError struct {
	Name string
	Err  error
}

func (e *FileError) Error() string { return e.Name + ": " + e.Err.Error() }
func (e *FileError) Unwrap() error { return e.Err }

var builtinSet = func() *Set {
	s, err := Parse(nil)
	if err != nil {
		panic(err)
	}
	return s
}()

// Builtin is the built-in pages.
func Builtin() *Set { return builtinSet }

// Parse overlays overrides (file name to template text) on the built-in templates,
// file by file, and checks the result as far as can be known before a request:
// every file parses, and every page renders the sample data of its own kind (see
// samples), which also runs html/template's escaping over all of the page's
// branches. A file name that is not a built-in one is refused: it could never be
// shown, and is most likely a typo. The error is a *FileError.
func Parse(overrides map[string]string) (*Set, error) { return parse(overrides, nil) }

// parse is Parse, telling onPage (if not nil) each file it is about to parse and
// render, so that a check that runs out of its budget can name it (see Check).
func parse(overrides map[string]string, onPage func(name string)) (*Set, error) {
	if onPage == nil {
		onPage = func(string) {}
	}
	for _, name := range slices.Sorted(maps.Keys(overrides)) {
		if _, ok := builtin[name]; !ok {
			return nil, &FileError{name, fmt.Errorf("not a page template; the templates are %s", strings.Join(Names(), ", "))}
		}
	}
	text := func(name string) string {
		if t, ok := overrides[name]; ok {
			return t
		}
		return builtin[name]
	}
	onPage(Layout)
	layout, err := template.New(Layout).Parse(text(Layout))
	if err != nil {
		return nil, &FileError{Layout, err}
	}
	s := &Set{pages: map[string]*template.Template{}}
	for _, name := range Names() {
		if name == Layout {
			continue
		}
		onPage(name)
		page, err := layout.Clone()
		if err == nil {
			_, err = page.New(name).Parse(text(name))
		}
		if err != nil {
			return nil, &FileError{name, err}
		}
		s.pages[name] = page
		for _, d := range samples(name) {
			if err := s.Execute(io.Discard, name, d); err != nil {
				who := name
				// An error in the text of a replaced layout is the layout's.
				if _, replaced := overrides[Layout]; replaced && strings.Contains(err.Error(), Layout+":") {
					who = Layout
				}
				return nil, &FileError{who, err}
			}
		}
	}
	return s, nil
}

// Load reads the templates in dir (a mounted ConfigMap: one file per key) and
// overlays them with Parse. An empty dir is the built-in pages.
func Load(dir string) (*Set, error) {
	if dir == "" {
		return Builtin(), nil
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("templates directory: %w", err)
	}
	overrides := map[string]string{}
	for _, e := range entries {
		// A ConfigMap volume keeps its files behind ..data and a timestamped
		// directory; the keys are the links beside them.
		if strings.HasPrefix(e.Name(), "..") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name())) // #nosec G304 -- a directory the operator mounts
		if err != nil {
			return nil, &FileError{e.Name(), err}
		}
		overrides[e.Name()] = string(b)
	}
	return Parse(overrides)
}

// MaxPageSize is the most a page may render to: a template that loops over more
// than it should stops there (html/template stops at the first failed write)
// instead of growing one request's memory without bound.
const MaxPageSize = 1 << 20

// errPageTooLarge is a page that rendered more than MaxPageSize.
var errPageTooLarge = fmt.Errorf("renders more than %d KiB", MaxPageSize>>10)

// cappedBuffer is a bytes.Buffer that refuses to grow past MaxPageSize.
type cappedBuffer struct{ bytes.Buffer }

func (b *cappedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > MaxPageSize {
		return 0, errPageTooLarge
	}
	return b.Buffer.Write(p)
}

// Execute renders the page name with d into w. It writes nothing unless the whole
// page rendered, so that a page failing halfway is never sent, and refuses a page
// larger than MaxPageSize.
func (s *Set) Execute(w io.Writer, name string, d Data) error {
	t, ok := s.pages[name]
	if !ok {
		return &FileError{name, errors.New("no such page")}
	}
	var buf cappedBuffer
	if err := t.ExecuteTemplate(&buf, name, d); err != nil {
		if errors.Is(err, errPageTooLarge) {
			// html/template's error would quote the offending write.
			return errPageTooLarge
		}
		return err
	}
	_, err := buf.WriteTo(w)
	return err
}
