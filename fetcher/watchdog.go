package fetcher

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// limitError is the cause with which one of an attempt's own bounds (the
// request timeout, the wait for headers, the stall timeout) cancels it.
type limitError struct {
	what string
	d    time.Duration
}

func (e *limitError) Error() string { return fmt.Sprintf("%s %v", e.what, e.d) }

// watchdogKey carries an attempt's *watchdog in its context, for send.
type watchdogKey struct{}

// startAttempt returns the context of one attempt under ctx and the
// function that ends it, which reports the attempt's own bound that cut
// it short (nil when none did). A bounded attempt (every read but a
// stream's) has RequestTimeout as a whole; a stream's attempt has
// RequestTimeout for the response headers only. Either fails once the
// response body, after its headers, delivers nothing for StallTimeout.
// A stream's attempt with the stall timeout disabled is bounded as a
// whole, so that nothing can hold it for ever.
func (f *Fetcher) startAttempt(ctx context.Context, stream bool) (context.Context, func() error) {
	actx := context.WithValue(ctx, slotHeldKey{}, true)
	endDeadline := context.CancelFunc(func() {})
	var headers time.Duration
	if stream && f.cfg.StallTimeout > 0 {
		headers = f.cfg.RequestTimeout
	} else {
		actx, endDeadline = context.WithTimeoutCause(actx, f.cfg.RequestTimeout,
			&limitError{"request timeout", f.cfg.RequestTimeout})
	}
	actx, cancel := context.WithCancelCause(actx)
	w := &watchdog{cancel: cancel, headers: headers, stall: f.cfg.StallTimeout}
	actx = context.WithValue(actx, watchdogKey{}, w)
	return actx, func() error {
		w.stop()
		cause := context.Cause(actx)
		cancel(nil)
		endDeadline()
		if le := (*limitError)(nil); errors.As(cause, &le) {
			return le
		}
		return nil
	}
}

// watchdog cancels one attempt when the server goes quiet: while waiting
// for response headers after headers (when positive), and after the
// headers when no body byte has arrived for stall (when positive). send
// switches it between the two phases; the body reports progress.
type watchdog struct {
	cancel         context.CancelCauseFunc
	headers, stall time.Duration
	last           atomic.Int64 // time of the last body bytes, UnixNano

	mu   sync.Mutex
	t    *time.Timer
	gen  int // arming generation: a timer of an older one does nothing
	body bool
	done bool
}

func watchdogFrom(ctx context.Context) *watchdog {
	w, _ := ctx.Value(watchdogKey{}).(*watchdog)
	return w
}

// awaitHeaders starts the wait for a response.
func (w *watchdog) awaitHeaders() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.body = false
	w.armLocked(w.headers)
}

// awaitBody starts the watch of a response body.
func (w *watchdog) awaitBody() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.body = true
	w.progress()
	w.armLocked(w.stall)
}

// progress records that body bytes arrived.
func (w *watchdog) progress() { w.last.Store(time.Now().UnixNano()) }

func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
	w.armLocked(0)
}

// armLocked replaces the timer with one firing after d (none if d <= 0).
func (w *watchdog) armLocked(d time.Duration) {
	if w.t != nil {
		w.t.Stop()
		w.t = nil
	}
	w.gen++
	if d <= 0 || w.done {
		return
	}
	g := w.gen
	w.t = time.AfterFunc(d, func() { w.fire(g) })
}

func (w *watchdog) fire(gen int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if gen != w.gen || w.done {
		return
	}
	if !w.body {
		w.cancel(&limitError{"no response headers within", w.headers})
		return
	}
	if idle := time.Since(time.Unix(0, w.last.Load())); idle < w.stall {
		w.armLocked(w.stall - idle)
		return
	}
	w.cancel(&limitError{"response stalled: no body bytes for", w.stall})
}
