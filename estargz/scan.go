package estargz

import (
	"archive/tar"
	"fmt"
	"io"
	"path"
)

// srcEntry is one entry of the source tar found by scanTar.
type srcEntry struct {
	name     string // clean name
	start    int64  // offset of its first header block
	end      int64  // offset just past its data and padding
	typeflag byte
	link     string // clean hardlink target
}

// scanTar lists the entries of the uncompressed tar in src, with the byte
// range each occupies so that it can be re-read out of order. A later entry
// of the same name replaces an earlier one (tar's rule), keeping the earlier
// one's position so that directories still precede their children.
func scanTar(src *io.SectionReader) ([]srcEntry, map[string]int, error) {
	sr := io.NewSectionReader(src, 0, src.Size())
	tr := tar.NewReader(sr)
	var out []srcEntry
	byName := map[string]int{}
	var pos int64
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%w: source tar at offset %d: %v", ErrFormat, pos, err)
		}
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return nil, nil, fmt.Errorf("%w: source tar %q: %v", ErrFormat, h.Name, err)
		}
		cur, _ := sr.Seek(0, io.SeekCurrent)
		end := (cur + 511) &^ 511
		e := srcEntry{start: pos, end: end, typeflag: h.Typeflag}
		pos = end
		switch h.Typeflag {
		case tar.TypeXGlobalHeader:
			continue
		case tar.TypeReg, tar.TypeRegA, tar.TypeGNUSparse, tar.TypeDir, tar.TypeSymlink,
			tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		default:
			return nil, nil, fmt.Errorf("%w: source tar %q: unsupported entry type %q", ErrFormat, h.Name, h.Typeflag)
		}
		if e.name, err = cleanName(h.Name); err != nil {
			return nil, nil, fmt.Errorf("source tar: %w", err)
		}
		if e.name == TOCTarName || e.name == PrefetchLandmark || e.name == NoPrefetchLandmark {
			// already eStargz (or a tar of one): these are regenerated
			continue
		}
		if h.Typeflag == tar.TypeLink {
			if e.link, err = cleanName(h.Linkname); err != nil {
				return nil, nil, fmt.Errorf("source tar: hardlink %q: %w", h.Name, err)
			}
		}
		if i, ok := byName[e.name]; ok {
			out[i] = e // tar's rule: the later entry wins, at the earlier place
			continue
		}
		byName[e.name] = len(out)
		out = append(out, e)
	}
	for i := range out {
		if out[i].typeflag != tar.TypeLink {
			continue
		}
		// resolve chains (a link to a link) to the entry holding the data
		target := out[i].link
		for hops := 0; ; hops++ {
			j, ok := byName[target]
			if !ok || hops > len(out) {
				return nil, nil, fmt.Errorf("%w: source tar: hardlink %q to %q, which is not in the layer", ErrFormat, out[i].name, out[i].link)
			}
			if out[j].typeflag == tar.TypeDir {
				return nil, nil, fmt.Errorf("%w: source tar: hardlink %q to directory %q", ErrFormat, out[i].name, target)
			}
			if out[j].typeflag != tar.TypeLink {
				break
			}
			target = out[j].link
		}
		if target == out[i].name {
			return nil, nil, fmt.Errorf("%w: source tar: hardlink %q to itself", ErrFormat, out[i].name)
		}
		out[i].link = target
	}
	return out, byName, nil
}

// parentDirs returns the ancestors of a clean name, outermost first.
func parentDirs(name string) []string {
	var dirs []string
	for d := path.Dir(name); d != "." && d != "/"; d = path.Dir(d) {
		dirs = append(dirs, d)
	}
	for i, j := 0, len(dirs)-1; i < j; i, j = i+1, j-1 {
		dirs[i], dirs[j] = dirs[j], dirs[i]
	}
	return dirs
}
