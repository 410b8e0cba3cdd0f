package testkit

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// EnvRequireDocker, when set, turns a missing Docker engine from a skip into
// a failure: CI sets it, so that the Docker tests cannot silently not run.
const EnvRequireDocker = "WARMPOOL_REQUIRE_DOCKER"

var image struct {
	once sync.Once
	tag  string
	err  error
}

// RequireDocker skips t, with a one-line reason, when no Docker engine
// answers; with $WARMPOOL_REQUIRE_DOCKER set it fails t instead.
func RequireDocker(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput()
	if err == nil {
		return
	}
	reason := fmt.Sprintf("no Docker engine: %v: %s", err, strings.TrimSpace(string(out)))
	if os.Getenv(EnvRequireDocker) != "" {
		t.Fatalf("%s (and $%s is set)", reason, EnvRequireDocker)
	}
	t.Skip(reason)
}

// ProjectImage builds warmpool's own image (the repository's Dockerfile with
// a static build of ./cmd/warmpool) once per test binary and returns its
// tag. Call RemoveProjectImage from TestMain after the tests.
func ProjectImage(t testing.TB) string {
	t.Helper()
	RequireDocker(t)
	image.once.Do(func() { image.tag, image.err = buildProjectImage() })
	if image.err != nil {
		t.Fatalf("building the warmpool image: %v", image.err)
	}
	return image.tag
}

// RemoveProjectImage removes the image ProjectImage built, if any.
func RemoveProjectImage() {
	if image.tag != "" {
		_ = exec.Command("docker", "rmi", "-f", image.tag).Run()
	}
}

func buildProjectImage() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	removeStaleImages(ctx)
	root, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	repo := filepath.Dir(strings.TrimSpace(string(root)))
	dir, err := os.MkdirTemp("", "warmpool-image")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-o", filepath.Join(dir, "warmpool"), "./cmd/warmpool")
	build.Dir = repo
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v: %s", err, out)
	}
	for _, f := range []string{"Dockerfile", ".dockerignore"} {
		b, err := os.ReadFile(filepath.Join(repo, f))
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			return "", err
		}
	}
	tag := fmt.Sprintf("warmpool-test:%d-%d", os.Getpid(), time.Now().UnixNano())
	cmd := exec.CommandContext(ctx, "docker", "build", "-q", "-t", tag, dir)
	// The classic builder pulls nothing for FROM scratch; BuildKit needs the
	// buildx plugin, which not every machine has.
	cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("docker build: %v: %s", err, out)
	}
	return tag, nil
}

// removeStaleImages removes the images of test binaries that died before
// they could (a panic skips TestMain's cleanup): their tags start with the
// pid of a process that no longer runs.
func removeStaleImages(ctx context.Context) {
	out, err := exec.CommandContext(ctx, "docker", "images", "--format", "{{.Repository}}:{{.Tag}}", "warmpool-test").Output()
	if err != nil {
		return
	}
	for _, ref := range strings.Fields(string(out)) {
		tag := ref[strings.LastIndexByte(ref, ':')+1:]
		pid, err := strconv.Atoi(strings.SplitN(tag, "-", 2)[0])
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue
		}
		_ = exec.CommandContext(ctx, "docker", "rmi", "-f", ref).Run()
	}
}

// Containers lists the ids of the containers, running or not, that carry
// label (key=value).
func Containers(t testing.TB, label string) []string {
	t.Helper()
	out, err := exec.Command("docker", "ps", "-aq", "--filter", "label="+label).Output()
	if err != nil {
		t.Fatalf("docker ps: %v", err)
	}
	return strings.Fields(string(out))
}

// RemoveContainers force-removes every container that carries label.
func RemoveContainers(label string) {
	out, _ := exec.Command("docker", "ps", "-aq", "--filter", "label="+label).Output()
	if ids := strings.Fields(string(out)); len(ids) > 0 {
		_ = exec.Command("docker", append([]string{"rm", "-f"}, ids...)...).Run()
	}
}
