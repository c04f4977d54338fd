package main

import (
	"context"
	"encoding/json"
	"time"

	"github.com/lazysnap/lazysnap/ops"
	"github.com/lazysnap/lazysnap/pull"
)

// lineRateProgress shows the layers lazysnap pulls itself at line rate:
// containerd's API shows nothing of them until their snapshot is
// committed (it records the snapshot once Prepare returns, and never
// fetches the blob), so they are learnt from lazysnap's status endpoint
// (target; "" asks nothing): a layer waiting in containerd's view that
// lazysnap is pulling becomes pull.PullingLineRate, with the bytes that
// have arrived. The status is asked at most every statusEvery, and only
// while a layer waits; one that cannot be read changes nothing.
type lineRateProgress struct {
	target  string
	last    time.Time
	pulling map[string]int64 // bytes by layer digest, of the layers pulling at the last status
}

const statusEvery = 500 * time.Millisecond

func (p *lineRateProgress) fill(ctx context.Context, layers []pull.Layer) {
	if p.target == "" {
		return
	}
	waiting := false
	for _, l := range layers {
		waiting = waiting || l.State == pull.Waiting
	}
	if !waiting {
		return
	}
	if time.Since(p.last) >= statusEvery {
		p.last = time.Now()
		p.pulling = p.read(ctx)
	}
	for i := range layers {
		if n, ok := p.pulling[layers[i].Digest.String()]; ok && layers[i].State == pull.Waiting {
			layers[i].State, layers[i].Done = pull.PullingLineRate, n
		}
	}
}

func (p *lineRateProgress) read(ctx context.Context) map[string]int64 {
	ctx, cancel := context.WithTimeout(ctx, statusEvery)
	defer cancel()
	body, err := ops.Fetch(ctx, p.target)
	if err != nil {
		return p.pulling
	}
	var rep ops.Report
	if json.Unmarshal(body, &rep) != nil {
		return p.pulling
	}
	out := map[string]int64{}
	for _, img := range rep.Images {
		for _, l := range img.Layers {
			if l.Path == ops.PathLineRate && l.State == ops.StatePulling {
				out[l.Digest] = max(out[l.Digest], l.FetchedBytes)
			}
		}
	}
	return out
}
