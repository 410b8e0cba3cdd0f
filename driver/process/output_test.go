package process

import (
	"fmt"
	"slices"
	"strings"
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
