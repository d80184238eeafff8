// Package testlog keeps what the servers under test log (the token server, the
// manager) in memory and prints the part a failed test saw, so that a failure in CI
// can be understood from its log without a re-run. Passing tests print nothing.
package testlog

import (
	"bytes"
	"sync"
	"testing"
)

// keep bounds the memory a long test binary spends on logs: only the last keep bytes
// are retained, which covers what one test writes many times over.
const keep = 8 << 20

// dumpMax bounds what one failed test prints: its newest lines.
const dumpMax = 128 << 10

// Buffer is an io.Writer for a server's log, safe for concurrent use.
type Buffer struct {
	mu      sync.Mutex
	data    []byte
	written int64 // bytes ever written; data holds the last len(data) of them
}

// Write appends p, dropping the oldest bytes beyond the bound.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.data = append(b.data, p...)
	b.written += int64(len(p))
	if over := len(b.data) - keep; over > 0 {
		b.data = append(b.data[:0], b.data[over:]...)
	}
	return len(p), nil
}

// mark is the position of the next byte written.
func (b *Buffer) mark() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.written
}

// since returns what was written after mark (what is still retained), cut to its
// newest max bytes at a line start, and whether anything was cut.
func (b *Buffer) since(mark int64, max int) ([]byte, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	start := len(b.data) - int(b.written-mark)
	cut := start < 0
	start = max0(start)
	if len(b.data)-start > max {
		start, cut = len(b.data)-max, true
		if i := bytes.IndexByte(b.data[start:], '\n'); i >= 0 {
			start += i + 1
		}
	}
	return bytes.Clone(b.data[start:]), cut
}

func max0(n int) int {
	if n < 0 {
		return 0
	}
	return n
}

// DumpOnFailure prints, when t ends failed, what name logged from now until then.
// Servers shared by parallel tests log for all of them: the dump may hold other
// tests' lines too.
func (b *Buffer) DumpOnFailure(t testing.TB, name string) {
	t.Helper()
	from := b.mark()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		out, cut := b.since(from, dumpMax)
		if len(out) == 0 {
			t.Logf("--- %s logged nothing during the test", name)
			return
		}
		note := ""
		if cut {
			note = " (newest lines only)"
		}
		t.Logf("--- %s log during the test%s:\n%s--- end of %s log", name, note, out, name)
	})
}
