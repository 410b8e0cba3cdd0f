package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warmpool/warmpool/messages"
	"github.com/warmpool/warmpool/testkit"
)

// composeCommand is `docker compose` where the plugin is there, else the
// older `docker-compose`. With neither, the test skips (or fails where the
// Docker tests are required).
func composeCommand(t *testing.T) []string {
	t.Helper()
	if exec.Command("docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	if path, err := exec.LookPath("docker-compose"); err == nil {
		return []string{path}
	}
	if os.Getenv(testkit.EnvRequireDocker) != "" {
		t.Fatalf("neither `docker compose` nor docker-compose is installed (and $%s is set)", testkit.EnvRequireDocker)
	}
	t.Skip("neither `docker compose` nor docker-compose is installed")
	return nil
}

// TestComposeSmoke brings up the repository's docker-compose.yml (three
// NATS servers, two pool nodes running docker containers), acquires a
// container through the CLI, asks its endpoint over HTTP, and takes the
// cluster down: nothing it made is left.
func TestComposeSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("brings up a docker-compose cluster")
	}
	image := testkit.ProjectImage(t)
	compose := composeCommand(t)
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	project := fmt.Sprintf("wpsmoke%d", os.Getpid())
	prefix := project + "-"
	port := testkit.FreePorts(t, 1)[0]
	run := func(args ...string) string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		argv := append(append(compose[1:len(compose):len(compose)], "-f", filepath.Join(repo, "docker-compose.yml"), "-p", project), args...)
		cmd := exec.CommandContext(ctx, compose[0], argv...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "WARMPOOL_IMAGE="+image, fmt.Sprintf("WARMPOOL_NATS_PORT=%d", port), "WARMPOOL_NODE_PREFIX="+prefix)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, out)
		}
		return string(out)
	}
	labels := []string{"io.warmpool.node=" + prefix + "node1", "io.warmpool.node=" + prefix + "node2", "com.docker.compose.project=" + project}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", run("logs", "--no-color", "--tail", "40"))
		}
		run("down", "-v", "--timeout", "30")
		for _, l := range labels {
			testkit.RemoveContainers(l)
		}
	})
	run("up", "-d")
	if t.Failed() {
		t.FailNow()
	}

	env := map[string]string{"NATS_URL": fmt.Sprintf("nats://127.0.0.1:%d", port)}
	testkit.CheckFor(t, 2*time.Minute, 250*time.Millisecond, func() error {
		code, out, errOut := runCLI(env, "stats", "--pool", "demo", "--timeout", "5s")
		if code != 0 {
			return fmt.Errorf("stats: %s", errOut)
		}
		var st messages.Stats
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			return err
		}
		if len(st.Nodes) != 2 || st.Warm < 2 {
			return fmt.Errorf("%d nodes, %d warm", len(st.Nodes), st.Warm)
		}
		return nil
	})
	acquire := func() messages.Lease {
		t.Helper()
		code, out, errOut := runCLI(env, "acquire", "smoke", "--pool", "demo")
		var l messages.Lease
		if code != 0 || json.Unmarshal([]byte(out), &l) != nil {
			t.Fatalf("acquire: %d %s %s", code, out, errOut)
		}
		return l
	}
	l := acquire()
	resp, err := http.Get(l.Endpoint + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), l.Slot) {
		t.Fatalf("GET %s: %d %s; want the slot %s", l.Endpoint, resp.StatusCode, body, l.Slot)
	}
	if again := acquire(); again.Endpoint != l.Endpoint || again.Slot != l.Slot {
		t.Fatalf("second acquire %+v; want %+v", again, l)
	}
	if code, out, errOut := runCLI(env, "release", "smoke", "--pool", "demo"); code != 0 {
		t.Fatalf("release: %s %s", out, errOut)
	}
	t.Logf("compose cluster served %s from %s on node %s", l.Endpoint, l.Slot, l.Node)

	run("down", "-v", "--timeout", "30")
	for _, label := range labels {
		if left := testkit.Containers(t, label); len(left) > 0 {
			t.Errorf("containers with %s left after down: %v", label, left)
		}
	}
}
