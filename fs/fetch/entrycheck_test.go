package fetch

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lazysnap/lazysnap/estargz"
	"github.com/lazysnap/lazysnap/index"
)

// scriptVerifier is an EntryVerifier over the eStargz decoder whose check
// of an inode reads what SOCI's would: a prefix of a chunk's range (the
// start of the span up to a symlink's header), or a whole chunk's range
// (the span of a file whose read follows).
type scriptVerifier struct {
	estargz.Decoder
	reads map[index.Ino][2]int64 // off, n
}

func (v scriptVerifier) VerifyEntry(ctx context.Context, ino index.Ino, blob BlobReader) error {
	r, ok := v.reads[ino]
	if !ok {
		return nil
	}
	_, err := blob.ReadRange(ctx, r[0], r[1])
	return err
}

// again returns how many of the bytes rs read were read before.
func again(rs [][2]int64) int64 {
	rs = slices.Clone(rs)
	slices.SortFunc(rs, func(x, y [2]int64) int { return cmp.Compare(x[0], y[0]) })
	var n, end int64
	for _, r := range rs {
		n += max(0, min(end, r[0]+r[1])-r[0])
		end = max(end, r[0]+r[1])
	}
	return n
}

// TestPrefixCheckOutlivesOtherChecks: the start of a chunk's range that a
// symlink's check read is still held when the chunk is read after the
// checks of more files than the four ranges once kept (on soci's 4 MiB
// spans, python3's hello fetched the span of /usr/lib64's symlink whole
// again, 0.9 MB, after nine other checks), whether those files are read
// (their ranges used up by the reads) or not (kept, within recentMax);
// and what a read used is not held after it.
func TestPrefixCheckOutlivesOtherChecks(t *testing.T) {
	x, data := syntheticLayer(t)
	big, _ := x.LookupPath("big")
	bc := x.Chunk(big, 0)
	var others []index.Ino
	for i := range 8 {
		ino, ok := x.LookupPath(fmt.Sprintf("many/file-%03d", i))
		if !ok || x.NumChunks(ino) != 1 {
			t.Fatalf("many/file-%03d: want a file of one chunk", i)
		}
		others = append(others, ino)
	}
	for _, tc := range []struct {
		name string
		read bool // the other files are read after their checks
		held int64
	}{
		{"other files checked and read", true, 100},
		{"other files checked, not read", false, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := scriptVerifier{reads: map[index.Ino][2]int64{big: {bc.Offset, 100}}}
			var want int64 = bc.CompressedSize()
			for _, ino := range others {
				c := x.Chunk(ino, 0)
				v.reads[ino] = [2]int64{c.Offset, c.CompressedSize()}
				want += c.CompressedSize()
			}
			v.Decoder = estargz.Decoder{}
			blob := &rangesBlob{data: data}
			l, err := NewLayer(x, blob, Options{ContentDir: t.TempDir(), NoPrefetch: true, NoBackground: true, ReadAround: -1, NoPredict: true, Decoder: v})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if _, err := l.VerifyEntry(t.Context(), big); err != nil {
				t.Fatal(err)
			}
			for _, ino := range others {
				if _, err := l.VerifyEntry(t.Context(), ino); err != nil {
					t.Fatal(err)
				}
				if tc.read {
					if err := l.Ensure(t.Context(), ino, 0, 0); err != nil {
						t.Fatal(err)
					}
				}
			}
			if tc.held >= 0 && l.recent.n != tc.held {
				t.Errorf("%d bytes held after the other files' reads, want %d (big's prefix)", l.recent.n, tc.held)
			}
			if err := l.Ensure(t.Context(), big, 0, 0); err != nil {
				t.Fatal(err)
			}
			if n := again(blob.ranges); n > 0 {
				t.Errorf("%d bytes fetched twice (ranges %v)", n, blob.ranges)
			}
			if got := l.Stats().FetchedBytes; got != want {
				t.Errorf("%d bytes fetched, want %d", got, want)
			}
		})
	}
}

// TestRecentRaw: what recentRaw holds after each step: a range held
// within another is not held twice, the oldest go beyond recentMax, and a
// fetch's range uses up the ranges within it, not one that shares its
// first byte.
func TestRecentRaw(t *testing.T) {
	type step struct {
		op     string // put, spare (putSpare), consume, drop
		off, n int64
	}
	b := make([]byte, recentMax)
	for _, tc := range []struct {
		name  string
		steps []step
		held  [][2]int64 // off, n, oldest first
	}{
		{"a range within one held", []step{{"put", 100, 50}, {"put", 110, 10}}, [][2]int64{{100, 50}}},
		{"a range holding one held", []step{{"put", 110, 10}, {"put", 100, 50}}, [][2]int64{{100, 50}}},
		{"the oldest beyond recentMax", []step{{"put", 0, recentMax / 2}, {"put", recentMax, recentMax / 2}, {"put", 2 * recentMax, 10}}, [][2]int64{{recentMax, recentMax / 2}, {2 * recentMax, 10}}},
		{"one larger than recentMax", []step{{"put", 0, 10}, {"put", 100, recentMax}}, [][2]int64{{100, recentMax}}},
		{"consumed within", []step{{"put", 100, 50}, {"put", 149, 20}, {"consume", 149, 100}}, [][2]int64{{100, 50}}},
		{"dropped overlapping", []step{{"put", 100, 50}, {"put", 149, 20}, {"drop", 149, 100}}, nil},
		{"a spare one first", []step{{"put", 0, 10}, {"spare", 100, recentMax / 2}, {"put", recentMax, recentMax / 2}}, [][2]int64{{0, 10}, {recentMax, recentMax / 2}}},
		{"a spare one that does not fit", []step{{"put", 0, recentMax / 2}, {"put", recentMax, recentMax / 2}, {"spare", 2 * recentMax, 10}}, [][2]int64{{0, recentMax / 2}, {recentMax, recentMax / 2}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c recentRaw
			for _, s := range tc.steps {
				switch s.op {
				case "put":
					c.put(s.off, b[:s.n])
				case "spare":
					c.putSpare(s.off, b[:s.n])
				case "consume":
					c.consume(s.off, s.n)
				case "drop":
					c.drop(s.off, s.n)
				}
			}
			var got [][2]int64
			var n int64
			for _, r := range c.r {
				got = append(got, [2]int64{r.off, int64(len(r.b))})
				n += int64(len(r.b))
			}
			if !slices.Equal(got, tc.held) || c.n != n {
				t.Errorf("held %v (%d bytes counted), want %v", got, c.n, tc.held)
			}
		})
	}
}

// TestEntryCheckHoldsBackground: a request waiting for an entry check
// counts as a reader waiting (Stats.Waiting), which the background yields
// to, and its end starts the quiet period again: on soci's 4 MiB spans,
// the background, quiet since the last read, fetched the span an open's
// check was fetching, 3.1 MB again at the start of python3's hello.
func TestEntryCheckHoldsBackground(t *testing.T) {
	l, blob, ino := gatedCheckLayer(t)
	before := l.lastOnDemand.Load()
	done := make(chan error)
	go func() { _, err := l.VerifyEntry(context.Background(), ino); done <- err }()
	<-blob.requests // the check's fetch is in flight
	for deadline := time.Now().Add(10 * time.Second); l.Stats().Waiting != 1; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("Waiting %d while a request waits for an entry check, want 1", l.Stats().Waiting)
		}
	}
	close(blob.gate)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the check never finished")
	}
	if w := l.Stats().Waiting; w != 0 {
		t.Errorf("Waiting %d after the check, want 0", w)
	}
	if l.lastOnDemand.Load() == before {
		t.Error("the check's end did not start the quiet period again")
	}
}

// gateAllBlob is a gateBlob whose streams and multi-range requests, each
// counted as a request, also wait for the gate.
type gateAllBlob struct{ *gateBlob }

func (b gateAllBlob) StreamRange(ctx context.Context, off, n int64, fn func([]byte)) error {
	raw, err := b.ReadRange(ctx, off, n)
	if err == nil {
		fn(raw)
	}
	return err
}

func (b gateAllBlob) ReadMultiRange(ctx context.Context, ranges []Range) ([][]byte, error) {
	b.requests <- struct{}{}
	select {
	case <-b.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	out := make([][]byte, len(ranges))
	for i, r := range ranges {
		out[i] = bytes.Clone(b.data[r.Off : r.Off+r.Len])
	}
	return out, nil
}

// TestFetchWaitsForCheckInFlight: a fetch of chunks whose range an entry
// check is reading waits for the check's bytes instead of asking for
// them again, whether it would have streamed them (a reader's, with
// read-around) or asked for them in a prediction's multi-range request
// (on lazysnap's 1 MiB spans, the check of a library's header fetched its
// span and the loader's prediction of the library asked for it again a
// few ms later: 1.5 MB in python3's imports).
func TestFetchWaitsForCheckInFlight(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fetch func(l *Layer, x *index.Index, ino index.Ino) error
	}{
		{"a stream", func(l *Layer, _ *index.Index, ino index.Ino) error { return l.Ensure(context.Background(), ino, 0, 0) }},
		{"a multi-range request", func(l *Layer, x *index.Index, ino index.Ino) error {
			other, _ := x.LookupPath("many/file-003")
			sp := &span{predict: true}
			var runs [][]want
			for _, id := range []int{x.ChunkID(ino, 0), x.ChunkID(other, 0)} {
				mine, _ := l.claim([]int{id}, sp)
				runs = append(runs, mine)
			}
			l.fetchMulti(runs)
			for _, ws := range runs {
				if !l.isPresent(ws[0].id) {
					return fmt.Errorf("chunk %d not present", ws[0].id)
				}
			}
			return nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x, data := syntheticLayer(t)
			ino, _ := x.LookupPath("many/file-001")
			gate := &gateBlob{data: data, gate: make(chan struct{}), requests: make(chan struct{}, 10)}
			v := scriptVerifier{reads: map[index.Ino][2]int64{ino: {0, int64(len(data))}}}
			l, err := NewLayer(x, gateAllBlob{gate}, Options{ContentDir: t.TempDir(), NoPrefetch: true, NoBackground: true, NoPredict: true, Decoder: v})
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			check := make(chan error, 1)
			go func() { _, err := l.VerifyEntry(context.Background(), ino); check <- err }()
			<-gate.requests // the check's read is in flight
			fetched := make(chan error, 1)
			go func() { fetched <- tc.fetch(l, x, ino) }()
			for deadline := time.Now().Add(10 * time.Second); l.flights.waiting() == 0; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					close(gate.gate)
					t.Fatalf("the fetch never waited for the check's read (%d more requests)", len(gate.requests))
				}
			}
			close(gate.gate)
			for _, c := range []chan error{check, fetched} {
				if err := <-c; err != nil {
					t.Fatal(err)
				}
			}
			if n := len(gate.requests); n != 0 {
				t.Fatalf("%d more requests, want none", n)
			}
		})
	}
}
