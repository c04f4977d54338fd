package fusemanager

import (
	"context"
	"time"

	"github.com/lazysnap/lazysnap/ops"
)

// Supervise asks the manager for its health every interval until ctx
// ends, and starts one (Ensure) whenever none listens: it was stopped,
// upgraded or killed, and running containers' reads of lazy layers wait
// until one serves the mounts again (HandoverFS). started, if not nil, is
// told of each start, or why it failed.
func (m *FS) Supervise(ctx context.Context, interval time.Duration, started func(Health, error)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
		hctx, cancel := context.WithTimeout(ctx, time.Minute) // a manager adopting many mounts answers late
		_, err := m.c.Health(hctx)
		if err != nil && NotListening(err) {
			h, err := m.Ensure(hctx)
			if started != nil {
				started(h, err)
			}
		}
		cancel()
	}
}

// GatherInto adds the manager's metrics to m's (GET /metrics, gathered at
// each scrape), and lazysnap_fuse_manager_up: 1 when it answers.
func (c *Client) GatherInto(m *ops.Metrics) error {
	return m.Gather(c.Gatherer(), "lazysnap_fuse_manager_up", "1 when the fuse manager serving the FUSE mounts answers.", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := c.Health(ctx)
		return err == nil
	})
}
