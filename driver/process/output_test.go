package process

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestTail(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", outputLineMax+100)
	many := make([]string, 0, 30)
	for i := range 30 {
		many = append(many, fmt.Sprintf("line %d", i))
	}
	tests := []struct {
		name   string
		writes []string
		want   []string
	}{
		{"nothing", nil, []string{}},
		{"one line", []string{"hello\n"}, []string{"hello"}},
		{"split writes", []string{"hel", "lo\nwor", "ld"}, []string{"hello", "world"}},
		{"crlf and blanks", []string{"a\r\n\n  \nb\n"}, []string{"a", "b"}},
		{"long line cut", []string{long + "\nnext\n"}, []string{long[:outputLineMax] + " …", "next"}},
		{"long partial cut", []string{long}, []string{long[:outputLineMax] + " …"}},
		{"keeps the last lines", []string{strings.Join(many, "\n") + "\n"}, many[10:]},
		{"partial counts", []string{strings.Join(many, "\n")}, many[10:]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tl := newTail()
			for _, w := range tt.writes {
				if n, err := tl.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if got := tl.Lines(); !slices.Equal(got, tt.want) {
				t.Errorf("Lines() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestOutputFile(t *testing.T) {
	t.Parallel()
	named := func() (*output, *os.File, error) {
		f, w, err := createNamed()
		return &output{f: f}, w, err
	}
	for name, create := range map[string]func() (*output, *os.File, error){"default": newOutput, "named": named} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			testOutputFile(t, create)
		})
	}
}

func testOutputFile(t *testing.T, create func() (*output, *os.File, error)) {
	o, w, err := create()
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	defer w.Close()
	// No name: nothing is left behind, whatever happens to the node.
	if fi, err := w.Stat(); err != nil || fi.Sys().(*syscall.Stat_t).Nlink != 0 {
		t.Errorf("output file %s has a name (stat %v, %v)", w.Name(), fi, err)
	}
	if got := o.lines(); len(got) != 0 {
		t.Errorf("lines() of an empty file = %q", got)
	}

	write := func(from, to int) []string {
		var lines []string
		var b strings.Builder
		for i := from; i < to; i++ {
			l := fmt.Sprintf("line %07d %s", i, strings.Repeat("x", 40))
			lines = append(lines, l)
			b.WriteString(l + "\n")
		}
		if _, err := w.WriteString(b.String()); err != nil {
			t.Fatal(err)
		}
		return lines
	}
	size := func() int64 {
		fi, err := o.f.Stat()
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}

	// Small: trim leaves it; lines reads the end, not the whole file.
	lines := write(0, 1000)
	o.trim()
	if size() == 0 {
		t.Fatal("trim cut a file below outputFileMax")
	}
	if got := o.lines(); !slices.Equal(got, lines[len(lines)-outputLines:]) {
		t.Errorf("lines() = %q, want the last %d lines", got, outputLines)
	}

	// Large: trim empties it and keeps the end, which lines joins with what
	// the process writes after, as it appends at the new end.
	lines = write(1000, 1000+2*outputFileMax/50)
	o.trim()
	if s := size(); s != 0 {
		t.Fatalf("size after trim = %d, want 0", s)
	}
	after := write(-5, 0)
	if s := size(); s == 0 || s > 1000 {
		t.Errorf("size after writing 5 lines = %d: the child does not append", s)
	}
	want := append(lines[len(lines)-(outputLines-len(after)):], after...)
	if got := o.lines(); !slices.Equal(got, want) {
		t.Errorf("lines() after trim = %q, want %q", got, want)
	}

	// After close the kept end is still there; trim does nothing.
	o.close()
	o.trim()
	if got := o.lines(); len(got) != outputLines || got[0] != lines[len(lines)-outputLines] {
		t.Errorf("lines() after close = %q", got)
	}
}
