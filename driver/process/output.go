package process

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// Limits of the output file.
const (
	// outputPrefix starts the output file's name, so that an adopter can tell
	// a file it may trim from one the process opened as its stdout itself.
	outputPrefix = "warmpool-output-"
	// outputKeep is how much of the file's end is read back for its last
	// lines: comfortably more than outputLines of outputLineMax.
	outputKeep = 16 << 10
	// outputFileMax is the size at which the file is cut back, so that a
	// chatty container does not fill the disk while a driver tracks it.
	outputFileMax = 1 << 20
	// outputTrimEvery is how often the file's size is checked.
	outputTrimEvery = time.Second
)

// output is where a process's stdout and stderr go: a file in the temporary
// directory without a name (O_TMPFILE; elsewhere the name is removed as soon
// as it is opened), so nothing is left behind even by a node killed in the
// middle of a Start, and which the kernel frees once the last process
// holding it exits.
//
// It is a file, not a pipe, because a container outlives the node that
// started it: with the node gone a pipe has no reader, and the container's
// next log line would kill it with SIGPIPE (Go programs die of it on
// stdout and stderr whatever they inherit). The child's descriptor appends,
// so that cutting the file back (trim) makes its writes start over at the
// top.
//
// Output written while no driver tracks the process (between a node's
// crash and the adoption by its successor) is not trimmed.
type output struct {
	mu    sync.Mutex
	f     *os.File // read and truncated; nil once closed or if not ours
	carry []byte   // the end of what the last trim cut off, from a line start
}

// newOutput creates the output file. It returns the driver's side and the
// child's (to pass as stdout and stderr and close after the start).
func newOutput() (*output, *os.File, error) {
	f, w, err := createUnnamed()
	if err != nil {
		return nil, nil, fmt.Errorf("process: output file: %w", err)
	}
	if f == nil {
		f, w, err = createNamed()
	}
	if err != nil {
		return nil, nil, err
	}
	return &output{f: f}, w, nil
}

// createNamed makes the output file where there is no O_TMPFILE.
func createNamed() (*os.File, *os.File, error) {
	f, err := os.CreateTemp("", outputPrefix+"*")
	if err != nil {
		return nil, nil, fmt.Errorf("process: output file: %w", err)
	}
	w, err := os.OpenFile(f.Name(), os.O_WRONLY|os.O_APPEND, 0)
	if rmErr := os.Remove(f.Name()); err == nil {
		err = rmErr
	}
	if err != nil {
		_ = f.Close()
		if w != nil {
			_ = w.Close()
		}
		return nil, nil, fmt.Errorf("process: output file: %w", err)
	}
	return f, w, nil
}

// lines returns the last lines of the output (see tail.Lines).
func (o *output) lines() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	buf := bytes.Clone(o.carry)
	if o.f != nil {
		end, cut := readEnd(o.f)
		if cut {
			buf = end
		} else {
			buf = append(buf, end...)
		}
	}
	if len(buf) > outputKeep {
		buf = fromLineStart(buf[len(buf)-outputKeep:])
	}
	t := newTail()
	_, _ = t.Write(buf)
	return t.Lines()
}

// trim cuts the file back to nothing once it is larger than outputFileMax,
// keeping its end in memory for lines. What the process writes between
// that read and the truncation is lost: the last lines only explain an
// exit, and the chance of one in that instant is small.
func (o *output) trim() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.f == nil {
		return
	}
	if fi, err := o.f.Stat(); err != nil || fi.Size() <= outputFileMax {
		return
	}
	end, _ := readEnd(o.f)
	if err := o.f.Truncate(0); err == nil {
		o.carry = end
	}
}

// close releases the driver's side of the file; lines still returns what
// trim kept.
func (o *output) close() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.f != nil {
		_ = o.f.Close()
		o.f = nil
	}
}

// readEnd returns up to outputKeep bytes from the end of f, and whether it
// had to leave out the start (then the result begins at a line start).
func readEnd(f *os.File) ([]byte, bool) {
	fi, err := f.Stat()
	if err != nil {
		return nil, false
	}
	off := max(fi.Size()-outputKeep, 0)
	buf := make([]byte, fi.Size()-off)
	n, err := f.ReadAt(buf, off)
	if err != nil && err != io.EOF {
		return nil, false
	}
	buf = buf[:n]
	if off > 0 {
		return fromLineStart(buf), true
	}
	return buf, false
}

// fromLineStart drops the partial line that b starts with.
func fromLineStart(b []byte) []byte {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[i+1:]
	}
	return nil
}

// Limits of the captured output. Only the tail matters (it explains an exit),
// and a process that writes without newlines must not grow memory.
const (
	outputLines   = 20
	outputLineMax = 512
)

// tail is an io.Writer that keeps the last lines written to it, within
// limits, whatever is written. Writes never fail.
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
