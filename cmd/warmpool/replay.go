package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/warmpool/warmpool/actors"
)

// replay replays a recording made with `serve --record` and says whether the
// pools make the same decisions again.
func (c *cli) replay(args []string) int {
	fs := c.newFlagSet("replay", "FILE", "Replay a recording made with `serve --record FILE` into fresh pools (no driver, no NATS,\na clock that reads the recorded times), print each pool's final state, and report any\ndivergence from the recorded events. Exits 1 if the replay diverged.")
	asJSON := fs.Bool("json", false, "print the results as JSON, one object per pool")
	pos, code, ok := c.parse(fs, args, 1, 1)
	if !ok {
		return code
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return c.fail(err)
	}
	defer f.Close()
	inputs, err := actors.ReadInputs(f)
	if err != nil {
		return c.fail(fmt.Errorf("%s: %w", pos[0], err))
	}
	results, err := actors.Replay(context.Background(), inputs, nil)
	if err != nil {
		return c.fail(fmt.Errorf("%s: %w", pos[0], err))
	}
	diverged := false
	enc := json.NewEncoder(c.stdout)
	for _, r := range results {
		if *asJSON {
			if err := enc.Encode(r); err != nil {
				return c.fail(err)
			}
		} else {
			actors.WriteResult(c.stdout, r)
		}
		diverged = diverged || len(r.Divergences) > 0
	}
	if diverged {
		fmt.Fprintln(c.stderr, "warmpool: the replay diverged from the recording")
		return exitFail
	}
	return exitOK
}
