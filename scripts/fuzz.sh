#!/usr/bin/env bash
# Runs every fuzzer in the module for a bounded number of executions.
#
# Budgets are execution counts (-fuzztime Nx), not durations: with a duration,
# go1.26's fuzz coordinator can report a bare "context deadline exceeded" as a
# failure when the deadline fires while a worker is mid-call (golang/go#75804,
# fixed in go1.27), which fails CI on a loaded machine with no failing input.
# A count has no wall-clock deadline to race; a slow machine only takes longer.
# Each budget below is about 10 s on 2 cores; FUZZSCALE multiplies them all
# (FUZZSCALE=10 for a longer local run). A fuzzer not listed gets DEFAULT.
#
# Any failure is real: go test writes the input to testdata/fuzz/<Fuzzer>/ and
# this script stops with go test's exit status.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
SCALE=${FUZZSCALE:-1}
DEFAULT=20000

budget() {
	case "$1" in
	FuzzParseFooter) echo 200000 ;;
	FuzzOpen) echo 300000 ;;
	FuzzTOC) echo 25000 ;;
	FuzzParseContentRange | FuzzReadMultipart) echo 70000 ;;
	FuzzManifestAndConfig) echo 6000 ;;
	*) echo "$DEFAULT" ;;
	esac
}

found=0
for pkg in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
	for f in $(grep -h '^func Fuzz' "$pkg"/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do
		n=$(( $(budget "$f") * SCALE ))
		echo "fuzz $pkg $f for ${n} executions"
		"$GO" test "$pkg" -run '^$' -fuzz "^${f}\$" -fuzztime "${n}x"
		found=$((found + 1))
	done
done
if [ "$found" -eq 0 ]; then
	echo "fuzz: no fuzzers found" >&2
	exit 1
fi
echo "fuzz: $found fuzzers passed"
