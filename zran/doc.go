// Package zran decompresses gzip streams while recording checkpoints, and
// resumes decompression from a checkpoint: the random-access scheme of zlib's
// examples/zran.c, in pure Go, with the conventions of SOCI's zinfo
// (awslabs/soci-snapshotter, ztoc/compression/gzip_zinfo.c), so that SOCI
// zTOCs built from these checkpoints are read by SOCI and SOCI's are read here.
// (Read at soci-snapshotter commit 77fb4266, 2026-08-11; gzip_zinfo.c last
// changed in 560e2ab6, concatenated members, released since v0.14.0.)
// TestSOCIConvention checks every checkpoint field against zlib's
// inflate(Z_BLOCK) run under zinfo's rules (testdata/zinfo_oracle.py).
//
// # Checkpoints
//
// A Checkpoint is a deflate block boundary: decompression can restart there
// given the compressed bit position and the 32 KiB of output that precede it.
// Bit positions count from bit 0 (least significant) of byte 0 of the blob,
// as deflate packs bits. For a block whose first bit is at absolute bit P:
//
//	In   = ceil(P/8)        the first byte wholly in or after the block
//	Bits = (8 - P%8) % 8    how many high bits of byte In-1 start the block
//	Out  = uncompressed offset of the block's first byte
//
// To resume, read byte In-1 (if Bits > 0), take its top Bits bits (byte >>
// (8-Bits)) as the first bits of the block, then continue at byte In. This is
// gzip_zinfo.c's gzip_checkpoint {in, bits, out}: it records totin (bytes
// handed to zlib's inflate) and data_type&7 (unused bits left in inflate's
// bit buffer, always < 8 when inflate(Z_BLOCK) stops at a block boundary), and
// extract_data_from_buffer primes inflate with data[0] >> (8-bits).
//
// Window is always WindowSize (32 KiB) bytes when made by an Indexer: the 32
// KiB of uncompressed stream before Out, zero-filled before offset 0 (zinfo
// keeps a zeroed 32 KiB circular buffer and copies all of it into every
// checkpoint, and its blob format stores exactly 32768 bytes per checkpoint).
// The window is not reset at a gzip member boundary: a checkpoint early in a
// later member carries the end of the previous member's output, as in SOCI.
// Resume accepts a shorter Window (the last len(Window) bytes before Out); a
// back-reference past its start is an error.
//
// Where checkpoints are (gzip_zinfo.c generate_zinfo_from_fp, which calls
// inflate(Z_BLOCK) and tests data_type):
//
//   - The first checkpoint is after the first member's gzip header, before its
//     first block: In = header length (10 for a plain header), Bits = 0,
//     Out = 0. (SOCI's v1 blobs omitted it and assumed In = 10.)
//   - A checkpoint is recorded at a block boundary that is not the end of a
//     member's final block (zlib's data_type bit 64), when Out == 0 or
//     Out - (Out of the previous checkpoint) > span (strictly greater). The
//     start of a later member, just after its header, is such a boundary; the
//     end of a member's last block is not.
//   - At most 16 checkpoints are recorded at Out == 0 (a deviation: zinfo
//     records one at every block boundary before the first output byte, and
//     a stream of empty blocks would make that a memory bomb; real streams
//     have a few at most).
//   - Members are concatenated as in pigz output: after a member's trailer the
//     next member's header is parsed and decompression continues.
//
// SOCI's C indexer stops indexing (without error) when a member ends exactly
// at one of its 16 KiB read boundaries; this package keeps indexing, so its
// checkpoint list can be longer than SOCI's for such blobs. Both are valid.
//
// Resume, like extract_data_from_buffer, decodes raw deflate from the
// checkpoint to the end of that member, skips its 8-byte trailer unchecked
// (its CRC covers bytes before the checkpoint), and then decodes any later
// members as gzip, checking their CRC-32 and ISIZE.
//
// # Errors
//
// Malformed input yields an error wrapping ErrFormat (bad header, corrupt
// deflate data, back-reference before the window) or ErrChecksum (CRC-32 or
// ISIZE mismatch); input that ends early yields io.ErrUnexpectedEOF. Read
// returns the bytes decoded before the fault first, then the error. Errors
// from the underlying reader are returned as they are. Nothing panics on any
// input.
//
// The decoded bytes of an Indexer equal compress/gzip's (multistream) for
// every stream compress/gzip accepts, and an Indexer fails where it fails
// (FuzzIndexer checks both). Before a failure it may return a few more bytes
// than compress/gzip, which stops decoding truncated input earlier.
//
// # Memory and concurrency
//
// An Indexer or resumed reader holds about 460 KiB of buffers and tables;
// an Indexer also holds 32 KiB per checkpoint (one per span bytes of output, so choose
// span accordingly). Neither is safe for concurrent use. Checkpoints returns
// a read-only view of the list, valid after later Reads too.
package zran
