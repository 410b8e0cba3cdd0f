package docker

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/build"
	"github.com/moby/moby/client"

	"github.com/warmpool/warmpool/driver"
	"github.com/warmpool/warmpool/messages"
)

// The tests run against the real Docker engine. TestMain builds two images
// FROM scratch around testdata/demo (a static HTTP server): imagePlain, and
// imageHealth with a HEALTHCHECK that runs the same binary as its client.
// Both are removed at the end. Without a daemon every test that needs one
// skips, saying why.
var (
	runID       string // in every node name and image tag of this run
	dockerErr   error  // why the daemon cannot be reached; nil if it can
	setUpErr    error  // why the images could not be built
	testCli     *client.Client
	imagePlain  string
	imageHealth string
)

const demoDockerfile = `FROM scratch
COPY demo /demo
ENV PORT=8080
EXPOSE 8080
ENTRYPOINT ["/demo"]
`

// The interval is short so that Ready sees "healthy" soon; Docker runs the
// first check one interval after the start.
const healthDockerfile = demoDockerfile + `HEALTHCHECK --interval=250ms --timeout=2s --retries=3 CMD ["/demo", "healthcheck"]
`

func TestMain(m *testing.M) {
	runID = "t" + randomHex(4)
	imagePlain = "warmpool-test-demo:" + runID
	imageHealth = "warmpool-test-demo:" + runID + "-health"
	code := func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if dockerErr = connect(ctx); dockerErr == nil {
			defer tearDown()
			setUpErr = setUp(ctx)
		}
		return m.Run()
	}()
	os.Exit(code)
}

func connect(ctx context.Context) error {
	var err error
	testCli, err = client.New(client.FromEnv)
	if err != nil {
		return err
	}
	if _, err := testCli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return fmt.Errorf("docker daemon unreachable: %w", err)
	}
	return nil
}

func setUp(ctx context.Context) error {
	dir, err := os.MkdirTemp("", "warmpool-docker-test-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "demo")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./testdata/demo")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building testdata/demo: %v\n%s", err, out)
	}
	demo, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	if err := buildImage(ctx, imagePlain, demoDockerfile, demo); err != nil {
		return err
	}
	return buildImage(ctx, imageHealth, healthDockerfile, demo)
}

// buildImage builds tag from a context of a Dockerfile and the demo binary,
// with the classic builder: it is in every engine, needs no buildx, and
// pulls nothing for FROM scratch.
func buildImage(ctx context.Context, tag, dockerfile string, demo []byte) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{{"Dockerfile", 0o644, []byte(dockerfile)}, {"demo", 0o755, demo}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data))}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	res, err := testCli.ImageBuild(ctx, &buf, client.ImageBuildOptions{
		Tags:        []string{tag},
		Remove:      true,
		ForceRemove: true,
		Version:     build.BuilderV1,
		Labels:      map[string]string{"io.warmpool.test": runID},
	})
	if err != nil {
		return fmt.Errorf("building %s: %w", tag, err)
	}
	defer res.Body.Close()
	dec := json.NewDecoder(res.Body)
	var log strings.Builder
	for {
		var msg struct {
			Stream string `json:"stream"`
			Error  string `json:"error"`
		}
		if err := dec.Decode(&msg); err == io.EOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("building %s: %w", tag, err)
		}
		log.WriteString(msg.Stream)
		if msg.Error != "" {
			return fmt.Errorf("building %s: %s\n%s", tag, msg.Error, log.String())
		}
	}
}

// tearDown removes the images and whatever container of this run is left.
func tearDown() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := testCli.ContainerList(ctx, client.ContainerListOptions{
		All: true, Filters: make(client.Filters).Add("label", LabelManaged+"=true"),
	})
	if err == nil {
		for _, s := range res.Items {
			if strings.HasPrefix(s.Labels[LabelNode], runID+"-") {
				fmt.Fprintf(os.Stderr, "removing leftover container %s of node %s\n", shortID(s.ID), s.Labels[LabelNode])
				_, _ = testCli.ContainerRemove(ctx, s.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
			}
		}
	}
	for _, img := range []string{imageHealth, imagePlain} {
		if _, err := testCli.ImageRemove(ctx, img, client.ImageRemoveOptions{Force: true, PruneChildren: true}); err != nil && !cerrdefs.IsNotFound(err) {
			fmt.Fprintf(os.Stderr, "cannot remove image %s: %v\n", img, err)
		}
	}
	_ = testCli.Close()
}

// envRequireDocker is testkit.EnvRequireDocker (testkit imports this package).
const envRequireDocker = "WARMPOOL_REQUIRE_DOCKER"

// needDocker skips t without a daemon, fails it without the test images,
// and runs it in parallel with the others that need them.
func needDocker(t *testing.T) {
	t.Helper()
	if dockerErr != nil {
		if os.Getenv(envRequireDocker) != "" {
			t.Fatalf("no Docker, and $%s is set: %v", envRequireDocker, dockerErr)
		}
		t.Skipf("no Docker: %v", dockerErr)
	}
	if setUpErr != nil {
		t.Fatalf("setting up the test images: %v", setUpErr)
	}
	t.Parallel()
}

func ctx(t *testing.T, d time.Duration) context.Context {
	c, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return c
}

// nodeName is a node name for t alone, so that tests in parallel see only
// their own containers. Its cleanup removes every container of the node
// that is still there, failing t if there was one: no test leaves any.
func nodeName(t *testing.T) string {
	t.Helper()
	node := runID + "-" + regexp.MustCompile(`[^A-Za-z0-9_.-]+`).ReplaceAllString(t.Name(), "-")
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		ids := containersOf(t, c, node)
		for _, id := range ids {
			_, _ = testCli.ContainerRemove(c, id, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
		}
		if len(ids) > 0 && !t.Failed() {
			t.Errorf("%d containers of node %s were left behind", len(ids), node)
		}
	})
	return node
}

// containersOf lists the ids of node's containers, running or not.
func containersOf(t *testing.T, ctx context.Context, node string) []string {
	t.Helper()
	res, err := testCli.ContainerList(ctx, client.ContainerListOptions{
		All:     true,
		Filters: make(client.Filters).Add("label", LabelManaged+"=true", LabelNode+"="+node),
	})
	if err != nil {
		t.Errorf("listing the containers of %s: %v", node, err)
		return nil
	}
	var ids []string
	for _, s := range res.Items {
		ids = append(ids, s.ID)
	}
	return ids
}

// newDriver returns a driver that t's cleanup closes (a no-op if the test
// closed or detached it).
func newDriver(t *testing.T) *Driver {
	t.Helper()
	d, err := New(ctx(t, 10*time.Second), slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := d.Close(c); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return d
}

// testWriter sends the driver's log to t.Log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func spec(node, pool, slot, image string, env map[string]string) driver.Spec {
	return driver.Spec{
		Pool: pool,
		Slot: slot,
		Node: node,
		Template: messages.Template{
			Driver: messages.DriverDocker,
			Docker: &messages.DockerTemplate{Image: image, Port: 8080, Env: env},
		},
	}
}

func start(t *testing.T, d *Driver, s driver.Spec) driver.Handle {
	t.Helper()
	h, err := d.Start(ctx(t, 30*time.Second), s)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return h
}

func ready(t *testing.T, d *Driver, h driver.Handle) {
	t.Helper()
	if err := d.Ready(ctx(t, 20*time.Second), h); err != nil {
		t.Fatalf("Ready: %v", err)
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", url, resp.Status, b)
	}
	return string(b)
}

// gone fails t unless the container id no longer exists.
func gone(t *testing.T, id string) {
	t.Helper()
	_, err := testCli.ContainerInspect(ctx(t, 10*time.Second), id, client.ContainerInspectOptions{})
	if !cerrdefs.IsNotFound(err) {
		t.Fatalf("container %s still exists (inspect: %v)", shortID(id), err)
	}
}

func TestStartReadyServeStop(t *testing.T) {
	needDocker(t)
	node := nodeName(t)
	d := newDriver(t)
	s := spec(node, "web", "0123456789abcdef", imagePlain, map[string]string{"FOO": "bar", "PORT": "1"})
	s.Template.Env = map[string]string{"FROM_TEMPLATE": "yes", "FOO": "template"}
	s.Template.ReadyPath = "/healthz"
	s.Template.Docker.MemoryMB = 64
	s.Template.Docker.CPUs = 0.5
	h := start(t, d, s)
	if h.Port == 0 || h.Endpoint == "" || h.StartID == "" || h.StartedAt.IsZero() || len(h.ID) != 64 {
		t.Fatalf("handle %+v", h)
	}
	ready(t, d, h)
	body := get(t, h.Endpoint+"/")
	if want := "demo slot=0123456789abcdef pool=web node=" + node; !strings.Contains(body, want) {
		t.Errorf("GET / = %q, want %q", body, want)
	}
	if d.Running() != 1 {
		t.Errorf("Running = %d, want 1", d.Running())
	}

	insp, err := testCli.ContainerInspect(ctx(t, 10*time.Second), h.ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ic := insp.Container
	if ic.Name != "/warmpool-web-01234567" {
		t.Errorf("name %q", ic.Name)
	}
	for k, v := range map[string]string{LabelManaged: "true", LabelPool: "web", LabelSlot: "0123456789abcdef", LabelNode: node, LabelPort: "8080", LabelReadyPath: "/healthz"} {
		if ic.Config.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, ic.Config.Labels[k], v)
		}
	}
	for _, kv := range []string{"FOO=bar", "FROM_TEMPLATE=yes", "PORT=8080", "WARMPOOL_SLOT=0123456789abcdef", "WARMPOOL_POOL=web", "WARMPOOL_NODE=" + node} {
		if !slices.Contains(ic.Config.Env, kv) {
			t.Errorf("env %q missing from %q", kv, ic.Config.Env)
		}
	}
	if ic.HostConfig.Memory != 64<<20 || ic.HostConfig.NanoCPUs != 5e8 {
		t.Errorf("limits: memory %d, nano cpus %d", ic.HostConfig.Memory, ic.HostConfig.NanoCPUs)
	}
	if ic.State.StartedAt != h.StartID {
		t.Errorf("StartID %q, StartedAt %q", h.StartID, ic.State.StartedAt)
	}
	for _, b := range ic.HostConfig.PortBindings {
		if len(b) != 1 || b[0].HostIP.String() != "127.0.0.1" {
			t.Errorf("port bindings %v: want 127.0.0.1 only", ic.HostConfig.PortBindings)
		}
	}

	began := time.Now()
	if err := d.Stop(ctx(t, 30*time.Second), h, 5*time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("Stop took %s", time.Since(began))
	gone(t, h.ID)
	if d.Running() != 0 {
		t.Errorf("Running = %d after Stop", d.Running())
	}
	if err := d.Stop(ctx(t, 10*time.Second), h, time.Second); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	if err := d.Ready(ctx(t, time.Second), h); !errors.Is(err, driver.ErrUnknownContainer) {
		t.Errorf("Ready after Stop = %v, want ErrUnknownContainer", err)
	}
}

// A bare TCP connect succeeds as soon as docker-proxy listens; Ready must
// wait for the server in the container.
func TestReadyTCPWaitsForTheServer(t *testing.T) {
	needDocker(t)
	node := nodeName(t)
	d := newDriver(t)
	h := start(t, d, spec(node, "web", "slot-tcp", imagePlain, map[string]string{"DEMO_LISTEN_DELAY": "1500ms"}))
	began := time.Now()
	ready(t, d, h)
	if took := time.Since(began); took < time.Second {
		t.Errorf("Ready after %s, before the server listened", took)
	}
	get(t, h.Endpoint+"/")
}

func TestReadyWaitsForHealthy(t *testing.T) {
	needDocker(t)
	node := nodeName(t)
	d := newDriver(t)
	s := spec(node, "web", "slot-health", imageHealth, map[string]string{"DEMO_UNHEALTHY_FOR": "1s"})
	h := start(t, d, s)
	began := time.Now()
	ready(t, d, h)
	t.Logf("healthy after %s", time.Since(began))
	insp, err := testCli.ContainerInspect(ctx(t, 10*time.Second), h.ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if hs := insp.Container.State.Health; hs == nil || hs.Status != "healthy" {
		t.Fatalf("Ready returned with health %+v", hs)
	}
	get(t, h.Endpoint+"/healthz")

	// A health check that never passes: Ready says so when ctx ends.
	s.Slot = "slot-sick"
	s.Template.Docker.Env = map[string]string{"DEMO_UNHEALTHY_FOR": "1h"}
	h2 := start(t, d, s)
	err = d.Ready(ctx(t, 2*time.Second), h2)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "503") {
		t.Errorf("Ready of a sick container = %v, want a deadline error naming the last check", err)
	}
}

func TestWaitNoticesKill(t *testing.T) {
	needDocker(t)
	node := nodeName(t)
	d := newDriver(t)
	h := start(t, d, spec(node, "web", "slot-kill", imagePlain, nil))
	ready(t, d, h)
	exited := make(chan driver.Exit, 1)
	go func() {
		e, err := d.Wait(ctx(t, 30*time.Second), h)
		if err != nil {
			t.Errorf("Wait: %v", err)
		}
		exited <- e
	}()
	if _, err := testCli.ContainerKill(ctx(t, 10*time.Second), h.ID, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	select {
	case e := <-exited:
		t.Logf("Wait noticed the kill after %s: %+v", time.Since(began), e)
		if e.Code != 137 || !strings.HasPrefix(e.Reason, "exited with status 137") || !strings.Contains(e.Reason, "listening on") {
			t.Errorf("exit %+v, want status 137 with the log", e)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Wait did not notice the kill")
	}
	if d.Running() != 0 {
		t.Errorf("Running = %d after the kill", d.Running())
	}
	// The exited container stays until Stop.
	if ids := containersOf(t, ctx(t, 10*time.Second), node); len(ids) != 1 {
		t.Errorf("%d containers before Stop, want the exited one", len(ids))
	}
	if err := d.Stop(ctx(t, 10*time.Second), h, time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	gone(t, h.ID)

	// Removal by someone else is noticed too.
	h2 := start(t, d, spec(node, "web", "slot-rm", imagePlain, nil))
	ready(t, d, h2)
	if _, err := testCli.ContainerRemove(ctx(t, 10*time.Second), h2.ID, client.ContainerRemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	// Whether the exit is described before the removal or after is a race.
	e, err := d.Wait(ctx(t, 15*time.Second), h2)
	if err != nil || e.Code != 137 && e.Code != -1 {
		t.Errorf("Wait after docker rm -f = %+v, %v", e, err)
	}
	if err := d.Stop(ctx(t, 10*time.Second), h2, time.Second); err != nil {
		t.Errorf("Stop of a removed container: %v", err)
	}
}

// An exit while the event stream is down (a daemon restart, say) is
// noticed once it is reopened.
func TestWaitAcrossEventStreamBreak(t *testing.T) {
	needDocker(t)
	node := nodeName(t)
	d := newDriver(t)
	h := start(t, d, spec(node, "web", "slot-break", imagePlain, nil))
	ready(t, d, h)
	d.minBackoff.Store(int64(time.Second))
	d.mu.Lock()
	d.breakEvents()
	d.mu.Unlock()
	if _, err := testCli.ContainerKill(ctx(t, 10*time.Second), h.ID, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	e, err := d.Wait(ctx(t, 15*time.Second), h)
	if err != nil || e.Code != 137 {
		t.Fatalf("Wait = %+v, %v", e, err)
	}
	if took := time.Since(began); took < 500*time.Millisecond {
		t.Errorf("Wait returned after %s, before the stream was reopened", took)
	}
}

func TestExitDuringWarming(t *testing.T) {
	needDocker(t)
	node := nodeName(t)
	d := newDriver(t)
	h := start(t, d, spec(node, "web", "slot-exit", imagePlain, map[string]string{"DEMO_EXIT": "3", "DEMO_LINES": "30"}))
	err := d.Ready(ctx(t, 20*time.Second), h)
	if !errors.Is(err, driver.ErrExited) {
		t.Fatalf("Ready = %v, want ErrExited", err)
	}
	msg := err.Error()
	t.Logf("Ready: %v", err)
	if !strings.Contains(msg, "exited with status 3") || !strings.Contains(msg, "warmpool-web-slot-exi") {
		t.Errorf("the error does not give the status and the container: %q", msg)
	}
	// The last 20 lines, from both streams, demultiplexed. Docker keeps the
	// order within a stream but not across them for lines written in a
	// burst, so only the last line of each stream is sure to be there.
	_, out, _ := strings.Cut(msg, "; last output:\n")
	lines := strings.Split(out, "\n")
	if len(lines) != logLines || !slices.Contains(lines, "line 29") || !slices.Contains(lines, "line 30") {
		t.Errorf("last output %q: want %d lines with line 29 (stdout) and line 30 (stderr)", lines, logLines)
	}
	for _, l := range lines {
		if !regexp.MustCompile(`^line \d+$`).MatchString(l) {
			t.Errorf("line %q is not one the container wrote", l)
		}
	}
	e, err := d.Wait(ctx(t, 5*time.Second), h)
	if err != nil || e.Code != 3 {
		t.Errorf("Wait = %+v, %v", e, err)
	}
	if err := d.Stop(ctx(t, 10*time.Second), h, time.Second); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	gone(t, h.ID)
}

func TestStartErrors(t *testing.T) {
	needDocker(t)
	node := nodeName(t)
	d := newDriver(t)
	missing := "warmpool-test-missing:" + runID
	_, err := d.Start(ctx(t, 10*time.Second), spec(node, "web", "slot-missing", missing, nil))
	if !errors.Is(err, ErrImageMissing) || !strings.Contains(err.Error(), `"`+missing+`"`) || !strings.Contains(err.Error(), "cannot be pulled") {
		t.Errorf("Start of a missing image = %v", err)
	}
	t.Logf("missing image: %v", err)

	s := spec(node, "web", "slot-bad", imagePlain, nil)
	s.Template.Docker = nil
	if _, err := d.Start(ctx(t, 10*time.Second), s); err == nil {
		t.Error("Start without a docker section succeeded")
	}
	s = spec(node, "web", "slot-bad", imagePlain, nil)
	s.Template.Docker.Network = "warmpool-no-such-network-" + runID
	_, err = d.Start(ctx(t, 10*time.Second), s)
	if err == nil || !strings.Contains(err.Error(), s.Template.Docker.Network) {
		t.Errorf("Start on a missing network = %v", err)
	}
	// The cleanup checks that no container was left.
}

// A node that exits leaving its containers (Detach) finds them again in
// its next run (List) and takes them over (Adopt).
func TestListAndAdoptAfterRestart(t *testing.T) {
	needDocker(t)
	node := nodeName(t)
	d1 := newDriver(t)
	ha := start(t, d1, spec(node, "web", "slot-a", imagePlain, nil))
	sb := spec(node, "api", "slot-b", imagePlain, nil)
	sb.Template.ReadyPath = "/healthz"
	hb := start(t, d1, sb)
	hx := start(t, d1, spec(node, "web", "slot-x", imagePlain, map[string]string{"DEMO_EXIT": "1"}))
	ready(t, d1, ha)
	ready(t, d1, hb)
	if _, err := d1.Wait(ctx(t, 10*time.Second), hx); err != nil {
		t.Fatal(err)
	}
	d1.Detach()
	if _, err := d1.Start(ctx(t, time.Second), sb); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Detach = %v, want ErrClosed", err)
	}

	d2 := newDriver(t)
	found, err := d2.List(ctx(t, 10*time.Second), node)
	if err != nil {
		t.Fatal(err)
	}
	if len(found) != 2 {
		t.Fatalf("List = %+v, want slot-b and slot-a", found)
	}
	for i, want := range []struct {
		h          driver.Handle
		pool, slot string
	}{{hb, "api", "slot-b"}, {ha, "web", "slot-a"}} {
		f := found[i]
		if f.Pool != want.pool || f.Slot != want.slot || f.Node != node ||
			f.Handle.ID != want.h.ID || f.Handle.StartID != want.h.StartID || f.Handle.Port != want.h.Port || f.Handle.Endpoint != want.h.Endpoint {
			t.Errorf("found %+v, want %+v of %s/%s", f, want.h, want.pool, want.slot)
		}
	}
	// List removed the exited one.
	gone(t, hx.ID)
	if other, err := d2.List(ctx(t, 10*time.Second), node+"-other"); err != nil || len(other) != 0 {
		t.Errorf("List of another node = %+v, %v", other, err)
	}

	wrong := ha
	wrong.StartID = "2001-01-01T00:00:00Z"
	if err := d2.Adopt(ctx(t, 10*time.Second), wrong); !errors.Is(err, driver.ErrNotSame) {
		t.Errorf("Adopt with another StartID = %v, want ErrNotSame", err)
	}
	wrong = ha
	wrong.Port++
	if err := d2.Adopt(ctx(t, 10*time.Second), wrong); !errors.Is(err, driver.ErrNotSame) {
		t.Errorf("Adopt with another port = %v, want ErrNotSame", err)
	}
	unknown := ha
	unknown.ID = randomHex(32)
	if err := d2.Adopt(ctx(t, 10*time.Second), unknown); !errors.Is(err, driver.ErrUnknownContainer) {
		t.Errorf("Adopt of no container = %v, want ErrUnknownContainer", err)
	}
	if _, err := d2.Wait(ctx(t, time.Second), ha); !errors.Is(err, driver.ErrUnknownContainer) {
		t.Errorf("Wait before Adopt = %v, want ErrUnknownContainer", err)
	}

	for _, f := range found {
		if err := d2.Adopt(ctx(t, 10*time.Second), f.Handle); err != nil {
			t.Fatalf("Adopt %s: %v", f.Slot, err)
		}
		if err := d2.Adopt(ctx(t, 10*time.Second), f.Handle); err != nil {
			t.Errorf("second Adopt %s: %v", f.Slot, err)
		}
		ready(t, d2, f.Handle)
		get(t, f.Handle.Endpoint+"/")
	}
	if d2.Running() != 2 {
		t.Errorf("Running = %d, want 2", d2.Running())
	}
	// An adopted container's death is noticed.
	if _, err := testCli.ContainerKill(ctx(t, 10*time.Second), ha.ID, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		t.Fatal(err)
	}
	if e, err := d2.Wait(ctx(t, 15*time.Second), ha); err != nil || e.Code != 137 {
		t.Errorf("Wait of the adopted = %+v, %v", e, err)
	}

	if err := d2.Close(ctx(t, 30*time.Second)); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if ids := containersOf(t, ctx(t, 10*time.Second), node); len(ids) != 0 {
		t.Errorf("%d containers after Close", len(ids))
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	needDocker(t)
	node := nodeName(t)
	d := newDriver(t)
	var hs []driver.Handle
	for i := range 3 {
		hs = append(hs, start(t, d, spec(node, "web", fmt.Sprintf("slot-%d", i), imagePlain, nil)))
	}
	for _, h := range hs {
		ready(t, d, h)
	}
	if n := len(containersOf(t, ctx(t, 10*time.Second), node)); n != 3 {
		t.Fatalf("%d containers, want 3", n)
	}
	// Close with an ended context removes them all the same, at once.
	ended, cancel := context.WithCancel(t.Context())
	cancel()
	began := time.Now()
	if err := d.Close(ended); err != nil {
		t.Fatalf("Close: %v", err)
	}
	t.Logf("Close took %s", time.Since(began))
	if ids := containersOf(t, ctx(t, 10*time.Second), node); len(ids) != 0 {
		t.Errorf("%d containers after Close", len(ids))
	}
	if d.Running() != 0 {
		t.Errorf("Running = %d after Close", d.Running())
	}
	if _, err := d.Start(ctx(t, time.Second), spec(node, "web", "late", imagePlain, nil)); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
}

func TestUnreachableDaemon(t *testing.T) {
	t.Parallel()
	sock := "unix://" + filepath.Join(t.TempDir(), "no-docker.sock")
	_, err := New(ctx(t, 5*time.Second), nil, WithHost(sock))
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "cannot reach the Docker daemon at "+sock+": ") {
		t.Fatalf("New = %v", err)
	}
	t.Log(err)
}

func TestContainerName(t *testing.T) {
	for _, c := range []struct{ pool, slot, want string }{
		{"web", "0123456789abcdef", "warmpool-web-01234567"},
		{"web", "ab", "warmpool-web-ab"},
		{"w_1", "a/b c:d9", "warmpool-w_1-a-b-c-d9"},
	} {
		if got := containerName(c.pool, c.slot); got != c.want {
			t.Errorf("containerName(%q, %q) = %q, want %q", c.pool, c.slot, got, c.want)
		}
	}
}

func TestTail(t *testing.T) {
	var tl tail
	for i := 1; i <= 50; i++ {
		fmt.Fprintf(&tl, "line %d\r\n\n", i)
	}
	_, _ = tl.Write([]byte(strings.Repeat("x", 2000)))
	got := tl.lines()
	if len(got) != logLines || got[0] != "line 32" || !strings.HasSuffix(got[len(got)-1], " …") || len(got[len(got)-1]) > logLineMax+4 {
		t.Errorf("lines = %q", got)
	}
}
