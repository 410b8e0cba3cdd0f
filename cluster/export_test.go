package cluster

import (
	"context"
	"time"
)

// SweepLeases runs the node's sweep (see sweepLeases) as of now.
func (n *Node) SweepLeases(ctx context.Context, now time.Time) int { return n.sweepLeases(ctx, now) }
