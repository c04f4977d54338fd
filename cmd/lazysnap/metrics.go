package main

import (
	"context"
	"time"

	"github.com/lazysnap/lazysnap/fusemanager"
	"github.com/lazysnap/lazysnap/ops"
)

// gatherManager adds a fuse manager's metrics to m's, and
// lazysnap_fuse_manager_up, whether it answers.
func gatherManager(m *ops.Metrics, c *fusemanager.Client) error {
	return m.Gather(c.Gatherer(), "lazysnap_fuse_manager_up", "1 when the fuse manager serving the FUSE mounts answers.", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := c.Health(ctx)
		return err == nil
	})
}
