package client_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/warmpool/warmpool/actors"
	"github.com/warmpool/warmpool/client"
	"github.com/warmpool/warmpool/cluster"
	"github.com/warmpool/warmpool/messages"
	"github.com/warmpool/warmpool/testkit"
)

func TestMain(m *testing.M) {
	testkit.RunDemoAppIfChild() // the examples' containers are this binary
	os.Exit(m.Run())
}

// exampleNode stands in for `warmpool serve`: a node with one pool, "web",
// of demo apps, and a connection to its NATS server.
func exampleNode(warmTarget, maxInstances int) (nc *nats.Conn, stop func()) {
	dir, _ := os.MkdirTemp("", "warmpool-example")
	web := testkit.DemoPool("web", 0)
	web.WarmTarget, web.MaxInstances = warmTarget, maxInstances
	node, err := cluster.Start(context.Background(), cluster.Options{
		DataDir: dir, NATSListen: "127.0.0.1:-1", Pools: []messages.PoolConfig{web},
		Logger: slog.New(slog.DiscardHandler), OnExit: actors.ExitStop,
	})
	if err != nil {
		panic(err)
	}
	nc, err = nats.Connect(node.ClientURL())
	if err != nil {
		panic(err)
	}
	return nc, func() {
		nc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = node.Shutdown(ctx)
		_ = os.RemoveAll(dir)
	}
}

// A session gets a container, uses it, gets the same one again, and lets go.
func Example() {
	nc, stop := exampleNode(1, 10)
	defer stop()
	ctx := context.Background()

	web := client.New(nc).Pool("web")
	lease, err := web.GetContainer(ctx, "session-42")
	if err != nil {
		fmt.Println("acquire:", err)
		return
	}
	resp, err := http.Get(lease.Endpoint + "/")
	if err != nil {
		fmt.Println("GET:", err)
		return
	}
	resp.Body.Close()
	fmt.Println(lease.ID, "->", resp.Status)

	again, _ := web.GetContainer(ctx, "session-42")
	fmt.Println("sticky:", again.Endpoint == lease.Endpoint)

	rel, err := web.ReleaseContainer(ctx, "session-42")
	fmt.Println("released:", rel.ID, err)
	// Output:
	// session-42 -> 200 OK
	// sticky: true
	// released: session-42 <nil>
}

// Errors wrap the sentinels: branch with errors.Is, retry what is retryable.
func ExamplePool_GetContainer_exhausted() {
	nc, stop := exampleNode(0, 1)
	defer stop()
	ctx := context.Background()

	web := client.New(nc).Pool("web")
	if _, err := web.GetContainer(ctx, "first"); err != nil {
		fmt.Println(err)
		return
	}
	_, err := web.GetContainer(ctx, "second")
	fmt.Println(errors.Is(err, client.ErrExhausted), client.IsRetryable(err))

	_, err = client.New(nc).Pool("nope").Stats(ctx)
	fmt.Println(errors.Is(err, client.ErrUnknownPool))
	// Output:
	// true true
	// true
}

// Stats reports the original library's counts and the pool's settings.
func ExamplePool_Stats() {
	nc, stop := exampleNode(2, 10)
	defer stop()
	ctx := context.Background()

	web := client.New(nc).Pool("web")
	for {
		st, err := web.Stats(ctx)
		if err != nil {
			fmt.Println(err)
			return
		}
		if st.Warm == 2 {
			fmt.Printf("warm=%d acquired=%d total=%d warmTarget=%d\n", st.Warm, st.Acquired, st.Total, st.Config.WarmTarget)
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Output:
	// warm=2 acquired=0 total=2 warmTarget=2
}
