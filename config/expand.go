package config

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/warmpool/warmpool/messages"
)

// Expand replaces ${NAME} in a config file's text with the value of the
// environment variable NAME, and ${NAME:-default} with default when NAME is
// unset or empty; $$ is a literal $. Any other $ is left as it is, so a
// shell's $HOME in a command passes through. The values go in as text,
// before the YAML is parsed: quote a value that YAML would misread. A
// variable that is unset, with no default, is an error naming it and its
// line.
func Expand(data []byte, lookup func(string) (string, bool)) ([]byte, error) {
	if !bytes.Contains(data, []byte("$")) {
		return data, nil
	}
	var out bytes.Buffer
	line := 1
	for i := 0; i < len(data); i++ {
		c := data[i]
		if c == '\n' {
			line++
		}
		if c != '$' || i+1 >= len(data) {
			out.WriteByte(c)
			continue
		}
		switch data[i+1] {
		case '$':
			out.WriteByte('$')
			i++
			continue
		case '{':
		default:
			out.WriteByte(c)
			continue
		}
		end := bytes.IndexByte(data[i+2:], '}')
		if end < 0 || bytes.IndexByte(data[i+2:i+2+end], '\n') >= 0 {
			return nil, fmt.Errorf("%w: line %d: ${ with no closing } (write $$ for a literal $)", messages.ErrConfigValidation, line)
		}
		expr := string(data[i+2 : i+2+end])
		name, def, hasDef := strings.Cut(expr, ":-")
		if !validEnvName(name) {
			return nil, fmt.Errorf("%w: line %d: ${%s}: %q is not a variable name", messages.ErrConfigValidation, line, expr, name)
		}
		val, ok := lookup(name)
		switch {
		case hasDef && val == "":
			val = def
		case !ok:
			return nil, fmt.Errorf("%w: line %d: ${%s}: $%s is not set (give a default: ${%s:-value})", messages.ErrConfigValidation, line, expr, name, name)
		}
		out.WriteString(val)
		i += 2 + end
	}
	return out.Bytes(), nil
}

func validEnvName(s string) bool {
	if s == "" || '0' <= s[0] && s[0] <= '9' {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_') {
			return false
		}
	}
	return true
}
