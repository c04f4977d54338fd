package fetch

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
)

// ErrPanic: decoding or serving a layer panicked. The layer is bad: its
// reads fail (EIO) from then on, its background work stops, and the
// other layers keep serving.
var ErrPanic = errors.New("fetch: panic")

// PanicError is a panic recovered while a layer's bytes were decoded or
// served: a bug (of lazysnap, met by these bytes), contained to the one
// layer. Error says what panicked and where ("panic: V at F file:line");
// Stack holds a few frames below that, for a debug log.
type PanicError struct {
	Layer string // the layer's name (Options.Name)
	Value string // what was panicked, as %v prints it
	Frame string // the panicking function and its file:line
	Stack string // up to maxPanicFrames frames from Frame down, one a line
}

func (e *PanicError) Error() string {
	return fmt.Sprintf("panic: %s at %s", e.Value, e.Frame)
}

func (e *PanicError) Unwrap() error { return ErrPanic }

// maxPanicFrames bounds PanicError.Stack.
const maxPanicFrames = 12

// Recovered describes r, a value recover returned for layer. It must be
// called from the deferred function that recovered (the stack is read
// there: the panicking frames are still on it). It is the one constructor
// of PanicErrors, for every place that contains a layer's panics: fs's
// goroutines and FUSE requests, and the callers' (remote's verification
// of a complete layer).
func Recovered(layer string, r any) *PanicError {
	pcs := make([]uintptr, 64)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(1, pcs)])
	e := &PanicError{Layer: layer, Value: fmt.Sprint(r), Frame: "unknown frame"}
	var (
		stack    []string
		panicked bool // past runtime.gopanic: the frames below are the panic's
	)
	for {
		f, more := frames.Next()
		switch {
		case !panicked:
			panicked = f.Function == "runtime.gopanic"
		case len(stack) == 0 && strings.HasPrefix(f.Function, "runtime."):
			// runtime.panicIndex and the like, raised for the caller
		case len(stack) < maxPanicFrames:
			stack = append(stack, fmt.Sprintf("%s %s:%d", shortFunc(f.Function), filepath.Base(f.File), f.Line))
		}
		if !more {
			break
		}
	}
	if len(stack) > 0 {
		e.Frame, e.Stack = stack[0], strings.Join(stack, "\n")
	}
	return e
}

// shortFunc drops the module path of a function's name:
// "zran.(*decoder).huffman".
func shortFunc(fn string) string {
	if i := strings.LastIndexByte(fn, '/'); i >= 0 {
		return fn[i+1:]
	}
	return fn
}

// Bad returns the PanicError that made the layer bad, or nil.
func (l *Layer) Bad() error {
	if e := l.bad.Load(); e != nil {
		return e
	}
	return nil
}

// Poison marks the layer bad for r, a value recover returned (the first
// panic is the one kept and reported), stops its background work and
// fetches, and returns the error. Called from the deferred function that
// recovered (a FUSE server's PanicHandler, for the panics of its requests).
func (l *Layer) Poison(r any) error { return l.poison(r) }

func (l *Layer) poison(r any) *PanicError {
	e := Recovered(l.opts.Name, r)
	if l.bad.CompareAndSwap(nil, e) {
		l.cancel() // the background and every fetch in flight end (EIO)
		l.fail(e)
		return e
	}
	return l.bad.Load()
}

// contain is deferred by every goroutine of the layer (prefetch,
// background, read-around and read-ahead fetches, a profile's prefetch),
// the one place their panics are recovered: the layer is marked bad, and
// the calls of ws that this goroutine owned and did not complete fail
// with the panic, so that their readers get EIO instead of waiting.
func (l *Layer) contain(ws []want) {
	r := recover()
	if r == nil {
		return
	}
	e := l.poison(r)
	for i := range ws {
		if !ws[i].reported {
			l.complete(&ws[i], e)
		}
	}
}
