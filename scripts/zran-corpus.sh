#!/usr/bin/env bash
# Fills the zran corpus (issue 21) and runs TestCorpus over it: the Debian
# rootfs tar (make rootfs) and, if built, the python3-torch tar
# (scripts/torch-image.sh), each compressed by gzip -1/-6/-9, pigz, zlib
# (Python), compress/gzip and pgzip, and the torch layer that umoci packed,
# cached in DIR (default /var/tmp/lazysnap-zran-corpus, about 0.6 GB, 5 GB
# more with torch).
# make test then runs the cached files; LAZYSNAP_REQUIRE_INTEGRATION=1
# compresses bookworm's itself.
# Usage: scripts/zran-corpus.sh [DIR] [go test flags]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-/var/tmp/lazysnap-zran-corpus}
shift || true
# the layer that umoci packed (the biggest blob of the torch layout), as is
torch_oci=/var/tmp/lazysnap-torch/oci
if [ -d "$torch_oci/blobs/sha256" ] && [ ! -e "$dir/torch.umoci-layer.gz" ]; then
	mkdir -p "$dir"
	layer=$(ls -S "$torch_oci"/blobs/sha256/* | head -1)
	ln "$layer" "$dir/torch.umoci-layer.gz" 2>/dev/null || cp "$layer" "$dir/torch.umoci-layer.gz"
fi
LAZYSNAP_ZRAN_CORPUS=$dir LAZYSNAP_ZRAN_CORPUS_GENERATE=1 \
	${GO:-go} test ./zran -run '^TestCorpus$' -count=1 -v -timeout 3h "$@"
ls -l "$dir"
