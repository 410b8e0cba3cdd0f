package process

import (
	"bytes"
	"sync"
)

// Limits of the captured output. Only the tail matters (it explains an exit),
// and a process that writes without newlines must not grow memory.
const (
	outputLines   = 20
	outputLineMax = 512
)

// tail is an io.Writer that keeps the last lines written to it. Writes never
// fail and never block on anything but a short mutex, so a chatty child is
// never slowed down by its own logging.
type tail struct {
	mu      sync.Mutex
	lines   []string // ring of complete lines
	next    int      // index in lines of the next line to overwrite once full
	partial []byte   // the current line, not yet ended by '\n'
	cut     bool     // the current line was longer than outputLineMax
}

func newTail() *tail {
	return &tail{lines: make([]string, 0, outputLines)}
}

// Write keeps p's lines. It always reports len(p) written.
func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i]
		}
		if room := outputLineMax - len(t.partial); len(chunk) > room {
			t.partial = append(t.partial, chunk[:room]...)
			t.cut = true
		} else {
			t.partial = append(t.partial, chunk...)
		}
		if i < 0 {
			break
		}
		t.endLine()
		p = p[i+1:]
	}
	return n, nil
}

// endLine moves the partial line into the ring.
func (t *tail) endLine() {
	line := string(bytes.TrimRight(t.partial, "\r"))
	if t.cut {
		line += " …"
	}
	t.partial = t.partial[:0]
	t.cut = false
	if len(t.lines) < outputLines {
		t.lines = append(t.lines, line)
		return
	}
	t.lines[t.next] = line
	t.next = (t.next + 1) % outputLines
}

// Lines returns the kept lines, oldest first, including an unfinished last
// line. Blank lines are dropped: they explain nothing.
func (t *tail) Lines() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]string, 0, len(t.lines)+1)
	for i := range t.lines {
		l := t.lines[(t.next+i)%len(t.lines)]
		if len(bytes.TrimSpace([]byte(l))) > 0 {
			out = append(out, l)
		}
	}
	if len(bytes.TrimSpace(t.partial)) > 0 {
		line := string(t.partial)
		if t.cut {
			line += " …"
		}
		out = append(out, line)
	}
	// Keep the promise of at most outputLines even with a partial line.
	if len(out) > outputLines {
		out = out[len(out)-outputLines:]
	}
	return out
}
