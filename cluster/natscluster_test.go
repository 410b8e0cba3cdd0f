package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/cluster"
	"github.com/warmpool/warmpool/testkit"
)

// TestLeaseWritesSurviveLeaderLoss: R3 buckets on a three-server cluster
// in this process. Writers keep creating, renewing and ending leases while
// the server that leads the lease bucket goes away: every write goes
// through (pausing while a new leader is elected), and the bucket holds
// exactly what the writers were told it holds.
func TestLeaseWritesSurviveLeaderLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a three-server NATS cluster")
	}
	srvs := testkit.StartNATSCluster(t, 3)
	urls := make([]string, len(srvs))
	for i, s := range srvs {
		urls[i] = s.ClientURL()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	js := func(i int) jetstream.JetStream {
		// Each writer prefers its own server and fails over to the others.
		nc, err := nats.Connect(urls[i%len(urls)], nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		j, err := jetstream.New(nc)
		if err != nil {
			t.Fatal(err)
		}
		return j
	}
	leasesJS := js(0)
	leases, _, err := cluster.OpenStores(ctx, leasesJS, cluster.StoreOptions{Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	info, err := js(0).Stream(ctx, "KV_"+cluster.DefaultLeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	leader := info.CachedInfo().Cluster.Leader
	if leader == "" || len(info.CachedInfo().Cluster.Replicas) != 2 {
		t.Fatalf("lease bucket cluster info %+v", info.CachedInfo().Cluster)
	}

	const writers = 6
	var (
		mu      sync.Mutex
		want    = map[string]uint64{} // id -> revision the writer was told
		slowest time.Duration
		killed  = make(chan struct{})
		wg      sync.WaitGroup
	)
	for w := range writers {
		stores, _, err := cluster.OpenStores(ctx, js(w), cluster.StoreOptions{Replicas: 3})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			after := 0
			for i := 0; after < 20; i++ {
				select {
				case <-killed:
					after++
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, i)
				r := actors.LeaseRecord{Pool: "web", ID: id, Node: "n1", Slot: "slot", Endpoint: "http://x", ExpiresAt: time.Now().Add(time.Minute)}
				start := time.Now()
				wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
				rev, err := stores.Create(wctx, r)
				if err == nil && i%3 == 1 {
					r.ExpiresAt = r.ExpiresAt.Add(time.Minute)
					rev, err = stores.Update(wctx, r, rev)
				}
				ended := false
				if err == nil && i%3 == 2 {
					err, ended = stores.Delete(wctx, "web", id, rev), true
				}
				wcancel()
				if err != nil {
					t.Errorf("%s: %v", id, err)
					return
				}
				mu.Lock()
				slowest = max(slowest, time.Since(start))
				if !ended {
					want[id] = rev
				}
				mu.Unlock()
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	for _, s := range srvs {
		if s.Name() == leader {
			s.Shutdown()
		}
	}
	close(killed)
	wg.Wait()
	if t.Failed() {
		return
	}
	got, err := leases.List(ctx, "web")
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]uint64{}
	for _, l := range got {
		have[l.Record.ID] = l.Revision
	}
	for id, rev := range want {
		if have[id] != rev {
			t.Errorf("%s: bucket has revision %d, the writer was told %d", id, have[id], rev)
		}
	}
	for id := range have {
		if _, ok := want[id]; !ok {
			t.Errorf("%s: in the bucket, but its writer ended it", id)
		}
	}
	info, err = leasesJS.Stream(ctx, "KV_"+cluster.DefaultLeaseBucket)
	if err != nil {
		t.Fatal(err)
	}
	ids := slices.Sorted(func(yield func(string) bool) {
		for id := range want {
			if !yield(id) {
				return
			}
		}
	})
	t.Logf("leader %s shut down; new leader %s; %d leases kept; slowest write %s",
		leader, info.CachedInfo().Cluster.Leader, len(ids), slowest.Round(time.Millisecond))
}
