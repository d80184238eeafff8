package pages

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	RunCheckIfChild()
	os.Exit(m.Run())
}

// doubling is a chain of n templates each calling the one below twice: 2^n calls
// from a few hundred bytes, and no output at all.
func doubling(n int) string {
	var b strings.Builder
	b.WriteString(`{{define "a0"}}{{end}}`)
	for i := 1; i <= n; i++ {
		b.WriteString(`{{define "a` + strconv.Itoa(i) + `"}}{{template "a` + strconv.Itoa(i-1) + `" .}}{{template "a` + strconv.Itoa(i-1) + `" .}}{{end}}`)
	}
	return b.String() + `{{template "top" .}}{{template "a` + strconv.Itoa(n) + `" .}}{{template "bottom" .}}`
}

// A ConfigMap writer's templates run in a child with a deadline and a memory cap:
// the hostile ones are refused naming the file and the budget they ran out of, and
// this process (the operator, in production) carries on, with its memory as it was.
func TestCheckRefusesTemplatesOverBudget(t *testing.T) {
	tests := map[string]struct {
		overrides  map[string]string
		file, says string
	}{
		"a normal template": {overrides: map[string]string{"login.html": `{{template "top" .}}<h1>{{.Brand.Name}}</h1>{{template "bottom" .}}`}},
		"a normal error": {overrides: map[string]string{"account.html": "{{.Usrname}}"}, file: "account.html",
			says: "can't evaluate field Usrname"},
		"an unknown key": {overrides: map[string]string{"logn.html": "x"}, file: "logn.html", says: "not a page template"},
		"range over three billion": {overrides: map[string]string{"error.html": `{{template "top" .}}{{range 3000000000}}xxxxxxxxxx{{end}}{{template "bottom" .}}`},
			file: "error.html", says: "renders more than 1024 KiB"},
		"2^40 template calls": {overrides: map[string]string{"consent.html": doubling(40)},
			file: "consent.html", says: "rendering it with sample data took longer than 5s"},
		"a string doubled forty times": {overrides: map[string]string{"logout.html": `{{$x := "a"}}{{range 40}}{{$x = printf "%s%s" $x $x}}{{end}}{{len $x}}`},
			file: "logout.html", says: "rendering it with sample data used more than 64 MiB"},
		"a layout that recurses (its stack)": {overrides: map[string]string{Layout: `{{define "top"}}{{template "top" .}}{{end}}{{define "bottom"}}{{end}}`},
			file: "account.html", says: "used more than 64 MiB"},
	}
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err := Check(ctx, tc.overrides)
			if tc.file == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var fe *FileError
			if !errors.As(err, &fe) || fe.Name != tc.file || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("error %v; want one naming %s and saying %q", err, tc.file, tc.says)
			}
		})
	}
	t.Cleanup(func() {
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		if after.HeapSys > before.HeapSys+64<<20 {
			t.Errorf("the checks grew this process's heap from %d to %d MiB", before.HeapSys>>20, after.HeapSys>>20)
		}
	})
}
