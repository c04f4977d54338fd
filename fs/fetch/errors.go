package fetch

// BlobError is a failure of the BlobReader. Whatever errno it carries (a
// socket's ECONNRESET or ECONNREFUSED, say) is the network's, not the
// file's: a server maps it to EIO (fs.Errno).
type BlobError struct{ Err error }

func (e *BlobError) Error() string { return e.Err.Error() }
func (e *BlobError) Unwrap() error { return e.Err }

// Interrupted is the reader's own context ending while it waited (the
// kernel interrupted the request): a server maps it to EINTR. A context
// that ended anywhere else (a fetch's, the layer's) is a failure.
type Interrupted struct{ Err error }

func (e *Interrupted) Error() string { return "fetch: read interrupted: " + e.Err.Error() }
func (e *Interrupted) Unwrap() error { return e.Err }
