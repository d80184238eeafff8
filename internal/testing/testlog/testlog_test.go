package testlog

import (
	"fmt"
	"strings"
	"testing"
)

func TestSinceReturnsWhatTheTestSaw(t *testing.T) {
	var b Buffer
	_, _ = fmt.Fprintln(&b, "before the test")
	m := b.mark()
	_, _ = fmt.Fprintln(&b, "line one")
	_, _ = fmt.Fprintln(&b, "line two")
	got, cut := b.since(m, 1<<10)
	if string(got) != "line one\nline two\n" || cut {
		t.Errorf("since = %q, cut %v", got, cut)
	}
	// Only the newest lines, from a line start, when there is more than max.
	got, cut = b.since(m, 12)
	if string(got) != "line two\n" || !cut {
		t.Errorf("since with max 12 = %q, cut %v", got, cut)
	}
}

func TestBufferStaysBounded(t *testing.T) {
	var b Buffer
	m := b.mark()
	line := strings.Repeat("x", 1023) + "\n"
	for range keep/len(line) + 100 {
		_, _ = b.Write([]byte(line))
	}
	if len(b.data) > keep {
		t.Fatalf("buffer holds %d bytes, bound %d", len(b.data), keep)
	}
	got, cut := b.since(m, keep)
	if !cut || len(got) == 0 || !strings.HasPrefix(string(got), "x") {
		t.Errorf("since an evicted mark: %d bytes, cut %v", len(got), cut)
	}
}
