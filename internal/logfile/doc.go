// Package logfile makes a file a process's output and keeps it to a size
// by rotation, for a daemon that no supervisor collects the output of (the
// fuse manager, which outlives the serve that started it).
//
// # Concepts
//
// A File is a path and the descriptors (usually 1 and 2) that are made to
// refer to it by dup3, so that a structured log written to stderr and the
// Go runtime's own output (a fatal error's stacks) both land in it. Once
// the file exceeds MaxBytes, Rotate renames it PATH.1 (PATH.1 becomes
// PATH.2, and so on; PATH.<Keep> is dropped) and opens a fresh PATH onto
// the descriptors. At most (Keep+1) × MaxBytes of logs exist, plus what is
// written between two checks. A PATH an operator removed is recreated.
//
// # Errors
//
// Open and Rotate return the file system's errors (wrapped with the path
// and descriptor for dup3). Run passes each failed rotation to its
// callback and goes on; the package logs nothing.
//
// # Concurrency
//
// A File is configuration only: its methods may be called from any
// goroutine, but two rotations of one path must not run at once (Run is
// meant to be the only caller after the first Open). Writers of the
// descriptors need no coordination: dup3 swaps the file under them
// atomically.
package logfile
