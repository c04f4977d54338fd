package main

import (
	"context"
	"time"

	"github.com/lazysnap/lazysnap/ops"
)

// gatherManager adds a fuse manager's metrics to m's, and
// lazysnap_fuse_manager_up, whether it answers.
func gatherManager(m *ops.Metrics, c *managerClient) error {
	return m.Gather(managerGatherer{c}, "lazysnap_fuse_manager_up", "1 when the fuse manager serving the FUSE mounts answers.", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := c.health(ctx)
		return err == nil
	})
}
