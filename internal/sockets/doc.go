// Package sockets creates the daemon's unix sockets safely and checks who
// connects to them.
//
// # Concepts
//
// Listen creates a socket with its final mode: it binds in a private
// directory (0700) beside the path, sets the mode, and renames the socket
// into place, so that no connection is ever accepted on a socket with a
// wider mode (a chmod after listen leaves a window; umask is process-wide).
// A path where something answers is never removed: Listen refuses it
// (ErrInUse). A socket that refuses connections (ECONNREFUSED: its
// listener is gone) is stale and replaced; anything else at the path (a
// file, a directory) is refused (ErrNotSocket). The listener removes its
// socket when closed, unless another socket has replaced it by then.
//
// PeerUID reads a connection's peer credentials (SO_PEERCRED), for the
// sockets whose commands act on mounts; Listener.RootOrOwner accepts only
// connections of root and of the listening process's user.
//
// # Errors
//
// ErrInUse, ErrNotSocket, wrapped with the path.
//
// # Concurrency
//
// Listen may be called concurrently for different paths; two calls for
// the same path race as two binds would (one of them fails).
package sockets
