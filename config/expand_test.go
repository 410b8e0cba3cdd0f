package config

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/warmpool/warmpool/messages"
)

func TestExpand(t *testing.T) {
	env := map[string]string{"IMAGE": "warmpool:dev", "EMPTY": "", "N": "3"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for _, tt := range []struct{ in, want, err string }{
		{in: "image: ${IMAGE}", want: "image: warmpool:dev"},
		{in: "image: ${MISSING:-fallback}", want: "image: fallback"},
		{in: "image: ${EMPTY:-fallback}", want: "image: fallback"},
		{in: "image: ${IMAGE:-fallback}", want: "image: warmpool:dev"},
		{in: "n: ${N}${N}", want: "n: 33"},
		{in: "cmd: [sh, -c, 'echo $HOME $1 $']", want: "cmd: [sh, -c, 'echo $HOME $1 $']"},
		{in: "cmd: 'echo $${HOME} $$'", want: "cmd: 'echo ${HOME} $'"},
		{in: "x: ${EMPTY}", want: "x: "},
		{in: "a: 1\nb: ${MISSING}", err: "line 2: ${MISSING}: $MISSING is not set"},
		{in: "a: ${IMAGE", err: "line 1: ${ with no closing }"},
		{in: "a: ${IMA\nGE}", err: "line 1: ${ with no closing }"},
		{in: "a: ${1X}", err: `"1X" is not a variable name`},
		{in: "a: ${}", err: `"" is not a variable name`},
	} {
		got, err := Expand([]byte(tt.in), lookup)
		if tt.err != "" {
			if !errors.Is(err, messages.ErrConfigValidation) || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("Expand(%q) = %q, %v; want an error with %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || string(got) != tt.want {
			t.Errorf("Expand(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestLoadExpandsEnv(t *testing.T) {
	t.Setenv("WARMPOOL_TEST_IMAGE", "my-image:1")
	path := filepath.Join(t.TempDir(), "pools.yaml")
	writeFile(t, path, "pools:\n  web:\n    driver: docker\n    docker:\n      image: ${WARMPOOL_TEST_IMAGE}\n    warmTarget: ${WARMPOOL_TEST_UNSET:-2}\n")
	f, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if p := f.Pools[0]; p.Docker == nil || p.Docker.Image != "my-image:1" || p.WarmTarget != 2 {
		t.Fatalf("pool %+v docker %+v", p, p.Docker)
	}
}
