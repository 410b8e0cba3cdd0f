package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/warmpool/warmpool/client"
	"github.com/warmpool/warmpool/cluster"
	"github.com/warmpool/warmpool/messages"
	"github.com/warmpool/warmpool/testkit"
)

// natsProc is one server of a NATS cluster, run as `warmpool nats` in a
// child process so that it can be killed with SIGKILL.
type natsProc struct {
	name string
	url  string
	cmd  *exec.Cmd
	log  *testkit.Buffer
	done chan struct{}
}

func startNATSProc(t *testing.T, dir string, i int, a testkit.NATSClusterAddrs) *natsProc {
	t.Helper()
	p := &natsProc{name: fmt.Sprintf("s%d", i+1), url: "nats://" + a.Client[i], log: &testkit.Buffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], "nats", "--name", p.name, "--listen", a.Client[i],
		"--cluster-listen", a.Cluster[i], "--routes", strings.Join(a.Routes, ","),
		"--data-dir", filepath.Join(dir, p.name))
	p.cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0")
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(p.kill)
	return p
}

func (p *natsProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// timed is one acquire as a caller sees it: retried until it succeeds,
// with how long that took.
type timed struct {
	lease messages.Lease
	took  time.Duration
	tries int
	err   error
}

// acquireRetrying acquires id until it succeeds or a minute passes. Each
// try is bounded on its own: a request sent to a server that dies is lost,
// and the caller tries again, as a production caller would.
func acquireRetrying(p *client.Pool, id string) timed {
	start := time.Now()
	var r timed
	for time.Since(start) < time.Minute {
		r.tries++
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		r.lease, r.err = p.GetContainer(ctx, id)
		cancel()
		if r.err == nil {
			break
		}
		if !client.IsRetryable(r.err) && !errors.Is(r.err, context.DeadlineExceeded) && !errors.Is(r.err, nats.ErrNoResponders) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	r.took = time.Since(start)
	return r
}

// shortCtx bounds one try of a request in a CheckFor: a request the queue
// group gave a node just as it died is lost, and the next try goes on.
func shortCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	t.Cleanup(cancel)
	return c
}

// percentile of sorted durations.
func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	return d[min(len(d)-1, int(q*float64(len(d))))]
}

// TestThreeNodesOnANATSCluster runs the scaled-out topology for real: three
// `warmpool nats` servers forming a NATS cluster, three `warmpool serve`
// nodes each connected to a different server, R3 buckets. It checks, in
// order: 200 concurrent acquires of 20 ids spread over all nodes make
// exactly 20 sessions; SIGKILL of a pool node under load moves only its
// sessions; SIGKILL of the NATS server leading the lease bucket pauses
// writes and loses nothing; a drained node exits with no session lost.
func TestThreeNodesOnANATSCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("runs six processes")
	}
	dir := t.TempDir()
	addrs := testkit.NewNATSClusterAddrs(t, 3)
	servers := make([]*natsProc, 3)
	for i := range servers {
		servers[i] = startNATSProc(t, dir, i, addrs)
	}
	cfg := writeWebConfig(t, dir, 6, 90, "    acquireTimeout: 10m\n")
	nodes := make([]*nodeProc, 3)
	ids := make([]string, 3)
	for i := range nodes {
		ids[i] = fmt.Sprintf("n%d-%d-%d", i+1, os.Getpid(), time.Now().UnixNano())
		t.Cleanup(func() { killContainers(ids[i]) })
		nodes[i] = startNodeProc(t, filepath.Join(dir, fmt.Sprintf("n%d", i+1)), cfg, ids[i], servers[i].url,
			"--replicas", "3", "--heartbeat", "250ms", "--dead-after", "3s")
	}
	// A client on each server: NATS gives a queue group's requests to a
	// subscriber on the publisher's own server first, so the load spreads
	// over the nodes as it does over the clients.
	pools := make([]*client.Pool, 3)
	conns := make([]*nats.Conn, 3)
	for i := range pools {
		nc, err := nats.Connect(servers[i].url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		conns[i] = nc
		pools[i] = client.New(nc).Pool("web")
	}
	testkit.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
		st, err := pools[0].Stats(shortCtx(t))
		if err != nil || len(st.Nodes) != 3 || st.Warm < 6 {
			return fmt.Errorf("cluster stats %+v %v", st, err)
		}
		return nil
	})
	js, err := jetstream.New(conns[0])
	if err != nil {
		t.Fatal(err)
	}
	if s, err := js.Stream(ctx(t), "KV_"+cluster.DefaultLeaseBucket); err != nil || s.CachedInfo().Config.Replicas != 3 {
		t.Fatalf("lease bucket: %v", err)
	}

	// 200 concurrent acquires of 20 ids, spread over the three nodes.
	sessions := map[string]messages.Lease{}
	{
		var mu sync.Mutex
		var wg sync.WaitGroup
		got := map[string][]messages.Lease{}
		for g := range 200 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				id := fmt.Sprintf("s%02d", g%20)
				r := acquireRetrying(pools[g%3], id)
				mu.Lock()
				defer mu.Unlock()
				if r.err != nil {
					t.Errorf("%s: %v", id, r.err)
					return
				}
				got[id] = append(got[id], r.lease)
			}()
		}
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		endpoints := map[string]string{}
		onNode := map[string]int{}
		for id, ls := range got {
			for _, l := range ls[1:] {
				if l.Endpoint != ls[0].Endpoint || l.Node != ls[0].Node || l.Slot != ls[0].Slot {
					t.Fatalf("%s: two containers: %+v and %+v\n%s", id, ls[0], l, logsAbout(nodes, id))
				}
			}
			if other, ok := endpoints[ls[0].Endpoint]; ok {
				t.Fatalf("%s and %s share %s", id, other, ls[0].Endpoint)
			}
			endpoints[ls[0].Endpoint] = id
			sessions[id] = ls[0]
			onNode[ls[0].Node]++
		}
		if len(sessions) != 20 {
			t.Fatalf("%d sessions, want 20", len(sessions))
		}
		if len(onNode) < 2 {
			t.Fatalf("sessions by node %v: the load did not spread", onNode)
		}
		testkit.CheckFor(t, 10*time.Second, 50*time.Millisecond, func() error {
			st, err := pools[1].Stats(shortCtx(t))
			if err != nil || st.Acquired != 20 {
				return fmt.Errorf("cluster-wide acquired %d (%v), want 20", st.Acquired, err)
			}
			return nil
		})
		for id, l := range sessions {
			if pidOfOK(l.Endpoint) <= 0 {
				t.Fatalf("%s: %s does not answer", id, l.Endpoint)
			}
		}
		t.Logf("200 concurrent acquires of 20 ids: 20 containers, by node %v", onNode)
	}

	// SIGKILL of a pool node under load: the others keep acquiring every
	// session all along.
	victim := 0 // the node with the most sessions
	for i := range nodes {
		if countOn(sessions, ids[i]) > countOn(sessions, ids[victim]) {
			victim = i
		}
	}
	{
		stop := make(chan struct{})
		var mu sync.Mutex
		var wg sync.WaitGroup
		var killed time.Time
		servedAgain := map[string]time.Duration{}
		for w := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := pools[w%3]
				for i := w; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					id := fmt.Sprintf("s%02d", i%20)
					r := acquireRetrying(p, id)
					mu.Lock()
					was := sessions[id]
					switch {
					case r.err != nil:
						t.Errorf("%s: %v", id, r.err)
					case was.Node != ids[victim] && r.lease.Endpoint != was.Endpoint:
						t.Errorf("%s, on live node %s, lost its container: %+v", id, was.Node, r.lease)
					case was.Node == ids[victim] && r.lease.Node != ids[victim]:
						if _, ok := servedAgain[id]; !ok {
							servedAgain[id] = time.Since(killed)
						}
					}
					mu.Unlock()
					if t.Failed() {
						return
					}
				}
			}()
		}
		killUnderLoad(&mu, &killed, nodes[victim].kill)
		testkit.CheckFor(t, 20*time.Second, 20*time.Millisecond, func() error {
			st, err := pools[(victim+1)%3].Stats(shortCtx(t))
			if err != nil || len(st.Nodes) != 2 {
				return fmt.Errorf("cluster sees %d nodes (%v)", len(st.Nodes), err)
			}
			return nil
		})
		detected := time.Since(killed)
		onVictim := countOn(sessions, ids[victim])
		testkit.CheckFor(t, 30*time.Second, 50*time.Millisecond, func() error {
			mu.Lock()
			defer mu.Unlock()
			if t.Failed() {
				return nil
			}
			if len(servedAgain) < onVictim {
				return fmt.Errorf("%d of the dead node's %d sessions served again", len(servedAgain), onVictim)
			}
			return nil
		})
		close(stop)
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		var slowest time.Duration
		for id := range servedAgain {
			slowest = max(slowest, servedAgain[id])
		}
		// The new sessions: each on a live node, and no two share one.
		endpoints := map[string]string{}
		for i := range 20 {
			id := fmt.Sprintf("s%02d", i)
			r := acquireRetrying(pools[(victim+1)%3], id)
			if r.err != nil || r.lease.Node == ids[victim] {
				t.Fatalf("%s after the kill: %+v %v", id, r.lease, r.err)
			}
			if other, ok := endpoints[r.lease.Endpoint]; ok {
				t.Fatalf("%s and %s share %s", id, other, r.lease.Endpoint)
			}
			endpoints[r.lease.Endpoint] = id
			sessions[id] = r.lease
		}
		t.Logf("pool node killed: declared dead %s later (dead-after 3s); its %d sessions served again within %s",
			detected.Round(time.Millisecond), onVictim, slowest.Round(time.Millisecond))
	}
	live := slices.DeleteFunc([]int{0, 1, 2}, func(i int) bool { return i == victim })

	// SIGKILL of the NATS server that leads the lease bucket, under load:
	// sticky acquires of the 20 sessions and new sessions made and ended.
	{
		s, err := js.Stream(ctx(t), "KV_"+cluster.DefaultLeaseBucket)
		if err != nil {
			t.Fatal(err)
		}
		leader := s.CachedInfo().Cluster.Leader
		var dead *natsProc
		for _, srv := range servers {
			if srv.name == leader {
				dead = srv
			}
		}
		if dead == nil {
			t.Fatalf("lease bucket leader %q is none of the servers", leader)
		}
		stop := make(chan struct{})
		var mu sync.Mutex
		var wg sync.WaitGroup
		var before, during []time.Duration
		var killed time.Time
		made := map[string]string{} // new session -> endpoint, while held
		for w := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := pools[live[w%2]]
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					id := fmt.Sprintf("s%02d", (w*7+i)%20)
					if i%2 == 1 {
						id = fmt.Sprintf("new-%d-%d", w, i)
					}
					r := acquireRetrying(p, id)
					mu.Lock()
					if killed.IsZero() {
						before = append(before, r.took)
					} else {
						during = append(during, r.took)
					}
					was, sticky := sessions[id]
					switch {
					case r.err != nil:
						t.Errorf("%s: %v", id, r.err)
					case sticky && r.lease.Endpoint != was.Endpoint:
						t.Errorf("%s lost its container across the NATS failover: %+v, was %+v", id, r.lease, was)
					case !sticky:
						for other, ep := range made {
							if ep == r.lease.Endpoint && other != id {
								t.Errorf("%s got %s, which %s holds", id, ep, other)
							}
						}
						for other, l := range sessions {
							if l.Endpoint == r.lease.Endpoint {
								t.Errorf("%s got %s, which %s holds", id, l.Endpoint, other)
							}
						}
						made[id] = r.lease.Endpoint
					}
					mu.Unlock()
					if !sticky && r.err == nil {
						// Once the release is sent, the container is no
						// longer the caller's, whenever the reply comes.
						mu.Lock()
						delete(made, id)
						mu.Unlock()
						ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
						var err error
						tries := 0
						for {
							tries++
							c, cancel := context.WithTimeout(ctx, 3*time.Second)
							_, err = p.ReleaseContainer(c, id)
							cancel()
							if err == nil || ctx.Err() != nil || !client.IsRetryable(err) && !errors.Is(err, context.DeadlineExceeded) {
								break
							}
							time.Sleep(50 * time.Millisecond)
						}
						// A retry may find the release done by a try whose
						// reply was lost.
						if err != nil && !(tries > 1 && errors.Is(err, client.ErrUnknownLease)) {
							t.Errorf("release %s (try %d): %v", id, tries, err)
						}
						cancel()
					}
					if t.Failed() {
						return
					}
				}
			}()
		}
		killUnderLoad(&mu, &killed, dead.kill)
		// Load goes on until a new leader has taken writes for a while.
		testkit.CheckFor(t, 30*time.Second, 100*time.Millisecond, func() error {
			c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			s, err := js.Stream(c, "KV_"+cluster.DefaultLeaseBucket)
			if err != nil {
				return fmt.Errorf("no new leader yet: %v (client on %s)", err, conns[0].ConnectedUrl())
			}
			if l := s.CachedInfo().Cluster.Leader; l == "" || l == leader {
				return fmt.Errorf("no new leader yet: %q", l)
			}
			return nil
		})
		time.Sleep(3 * time.Second)
		close(stop)
		wg.Wait()
		if t.Failed() {
			t.FailNow()
		}
		newLeader := "?"
		if s, err := js.Stream(ctx(t), "KV_"+cluster.DefaultLeaseBucket); err == nil {
			newLeader = s.CachedInfo().Cluster.Leader
		}
		slices.Sort(before)
		slices.Sort(during)
		if len(before) == 0 || len(during) == 0 {
			t.Fatalf("%d acquires before the kill, %d after", len(before), len(during))
		}
		t.Logf("NATS server %s, leader of the lease bucket, killed; new leader %s. Acquire latency before: p50 %s p99 %s (%d); from the kill on: p50 %s p99 %s max %s (%d)",
			leader, newLeader,
			percentile(before, 0.5).Round(time.Microsecond), percentile(before, 0.99).Round(time.Microsecond), len(before),
			percentile(during, 0.5).Round(time.Microsecond), percentile(during, 0.99).Round(time.Millisecond),
			during[len(during)-1].Round(time.Millisecond), len(during))
		// Nothing lost: every session keeps its container, and the
		// cluster holds exactly the 20 sessions.
		for id, was := range sessions {
			r := acquireRetrying(pools[live[0]], id)
			if r.err != nil || r.lease.Endpoint != was.Endpoint {
				t.Fatalf("%s after the failover: %+v %v; was %+v", id, r.lease, r.err, was)
			}
		}
		testkit.CheckFor(t, 20*time.Second, 50*time.Millisecond, func() error {
			st, err := pools[live[0]].Stats(shortCtx(t))
			if err != nil || st.Acquired != 20 {
				stray := strayLeases(t, js, sessions)
				var logs []string
				for _, id := range stray {
					logs = append(logs, logsAbout(nodes, strings.Split(id, "@")[0]))
				}
				return fmt.Errorf("cluster-wide acquired %d (%v), want 20; stored leases of others: %v\n%s", st.Acquired, err, stray, strings.Join(logs, "\n"))
			}
			return nil
		})
	}

	// Drain a live node: it serves its sessions until they end, then exits.
	{
		drained, other := live[0], live[1]
		var mine []string
		for id, l := range sessions {
			if l.Node == ids[drained] {
				mine = append(mine, id)
			}
		}
		code, out, errOut := runCLI(map[string]string{"NATS_URL": addrs.URLs()}, "drain", ids[drained])
		if code != 0 {
			t.Fatalf("drain: %d %s %s", code, out, errOut)
		}
		for _, id := range mine {
			r := acquireRetrying(pools[other], id)
			if r.err != nil || r.lease.Endpoint != sessions[id].Endpoint {
				t.Fatalf("%s of the draining node: %+v %v", id, r.lease, r.err)
			}
			if _, err := pools[other].ReleaseContainer(ctx(t), id); err != nil {
				t.Fatal(err)
			}
		}
		select {
		case <-nodes[drained].done:
		case <-time.After(30 * time.Second):
			t.Fatalf("drained node still runs; log:\n%s", nodes[drained].log.String())
		}
		if code := nodes[drained].cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("drained node exited %d", code)
		}
		for id, l := range sessions {
			if l.Node == ids[drained] {
				continue
			}
			r := acquireRetrying(pools[other], id)
			if r.err != nil || r.lease.Endpoint != l.Endpoint {
				t.Fatalf("%s after the drain: %+v %v", id, r.lease, r.err)
			}
		}
		if left := containers(t, ids[drained]); len(left) > 0 {
			t.Fatalf("the drained node left containers: %v", left)
		}
		t.Logf("node drained with %d sessions, released; it exited 0", len(mine))
	}
}

// killUnderLoad lets the load run a second, notes the time of the kill
// (under mu, which the load's goroutines read it under) and kills.
func killUnderLoad(mu *sync.Mutex, killed *time.Time, kill func()) {
	time.Sleep(time.Second)
	mu.Lock()
	*killed = time.Now()
	mu.Unlock()
	kill()
}

func countOn(sessions map[string]messages.Lease, node string) int {
	n := 0
	for _, l := range sessions {
		if l.Node == node {
			n++
		}
	}
	return n
}

// strayLeases lists the stored leases of ids other than sessions'.
func strayLeases(t *testing.T, js jetstream.JetStream, sessions map[string]messages.Lease) []string {
	leases, _, err := cluster.OpenStores(ctx(t), js, cluster.StoreOptions{Replicas: 3})
	if err != nil {
		return []string{err.Error()}
	}
	all, err := leases.List(ctx(t), "web")
	if err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, l := range all {
		if _, ok := sessions[l.Record.ID]; !ok {
			out = append(out, fmt.Sprintf("%s@%s/%s", l.Record.ID, l.Record.Node, l.Record.Slot))
		}
	}
	return out
}

// logsAbout gathers the nodes' log lines about session id, and their
// membership changes, for a failure's message.
func logsAbout(nodes []*nodeProc, id string) string {
	var out []string
	for _, n := range nodes {
		for _, line := range strings.Split(n.log.String(), "\n") {
			if strings.Contains(line, "session="+id+" ") || strings.Contains(line, "declared dead") || strings.Contains(line, "revoked") ||
				strings.Contains(line, "orphan") || strings.Contains(line, "stalled") {
				out = append(out, n.nodeID[:2]+": "+line)
			}
		}
	}
	return strings.Join(out, "\n")
}
