package fs

// opNames are the FUSE opcodes (linux/fuse.h) a read-only layer is sent,
// by the names fetch.Options.OnOp reports.
var opNames = map[uint32]string{
	1: "lookup", 2: "forget", 3: "getattr", 5: "readlink", 14: "open", 15: "read",
	17: "statfs", 18: "release", 22: "getxattr", 23: "listxattr", 25: "flush",
	26: "init", 27: "opendir", 28: "readdir", 29: "releasedir", 34: "access",
	36: "interrupt", 39: "ioctl", 40: "poll", 42: "batch_forget", 44: "readdirplus",
	46: "lseek", 52: "statx",
}

// OpName names a FUSE opcode for metrics: lowercase as in linux/fuse.h
// without FUSE_ ("lookup", "read"), "other" for one a read-only layer is
// not sent (so that the names are a small fixed set).
func OpName(opcode uint32) string {
	if n, ok := opNames[opcode]; ok {
		return n
	}
	return "other"
}
