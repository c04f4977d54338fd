// Package fusemanager is the protocol between lazysnap serve and the
// process that holds its FUSE mounts. A FUSE mount lives as long as the process that serves
// it: were the FUSE servers inside lazysnap serve, restarting serve (an
// upgrade, a crash, a config change) would leave every running container
// of a lazy image with ENOTCONN. So by default serve runs none itself: it
// starts `lazysnap fuse-manager` (in a session of its own, so that it
// outlives serve) and mounts, checks and unmounts layers through it. When
// serve restarts it finds the manager still running, and its snapshotter's
// restore keeps the live mounts (FileSystem.Check). The manager holds the
// fetcher, the caches and the mounts; serve holds the snapshots and the
// gRPC API containerd talks to.
//
// The protocol is JSON over HTTP on a unix socket (mode 0600, in the root
// directory unless fuse_manager.address says otherwise):
//
//	GET  /healthz   -> Health
//	POST /mount     Request -> 204, or Error
//	POST /check     Request -> 204, or Error
//	POST /unmount   Request -> 204, or Error
//	POST /usage     Request -> snapshots.Usage, or Error
//	POST /pull      snapshotter.PullRequest -> snapshotter.PullResult, or Error
//	POST /cleanup   -> 204, or Error
//	POST /pullauth  PullAuthRequest -> PullAuthResponse, or Error
//	POST /pullauth/revert  PullAuthRevert -> 204, or Error
//	GET  /status    -> ops.Report (without the snapshotter's part)
//	GET  /metrics   -> Prometheus text
//	GET  /debug/pprof/...  -> Go's profiles (net/http/pprof)
//
// The pull auths serve's CRI image service captures (package cri) reach
// the manager, which fetches, through /pullauth and live only in its
// memory: a restarted manager has none until the next pulls.
//
// A request's context is the caller's: when serve gives up on a Mount (its
// mount timeout, or containerd cancelling Prepare), the manager's Mount
// sees its context cancelled just as in-process.
//
// A Holder holds a duplicate of each mount's /dev/fuse descriptor with
// the state a successor needs, so that a manager that is stopped
// (SIGTERM, SIGINT: it stops serving and leaves the mounts), upgraded or
// killed is replaced with no lost mount: the next manager takes and
// adopts them. Under systemd that is the unit's file descriptor store
// (FDStore, fdstore.go); otherwise the fd keeper process (keeper.go),
// which only root and the manager's user may call (SO_PEERCRED) and which
// exits once it holds nothing and its manager is gone. Without either,
// stopping the manager unmounts every layer.
//
// # Concepts
//
// Handler serves a Service (a FileSystem, its health, metrics and status)
// on the manager's side; FS is the FileSystem on serve's side, a Client
// call per method, starting a manager when none listens. A manager's
// error reaches serve as an error that wraps the same snapshotter.Reason.
// HandoverFS is the manager's remote.FS with each mount put in the Holder
// (OpenHolder picks it) as it is mounted and dropped as it is unmounted;
// AdoptAll serves what a predecessor left there, detaching and dropping a
// mount it cannot adopt (ErrHandover: a state that is not that mount's).
// On serve's side, Supervise starts a manager again whenever none
// answers, and Client.GatherInto adds the manager's metrics to serve's.
// The handover's files live in the manager's root directory
// (KeeperSocketName, KeeperPIDName, KeeperLogName, HandoverDirName).
//
// # Concurrency
//
// Client and FS are safe for concurrent use; FS starts at most one
// manager at a time. Supervise runs in its caller's goroutine until its
// context ends (serve runs it in one of its own, for its lifetime).
package fusemanager
