#!/usr/bin/env bash
# make fuzz: explores every fuzzer in the module for a bounded number of
# executions, then prints a summary. It is not part of make test: make test
# runs only the seed corpora (plain go test runs each Fuzz* function on its
# f.Add seeds and on every file in testdata/fuzz/<Fuzzer>/), which is
# deterministic; this script feeds the fuzzers random inputs.
#
# Every fuzzer runs, even after one has failed. The summary lists each one
# as "ok", "FAIL" with the crasher it wrote, or "FAIL" without one (the
# coordinator or the build failed: see its log), and the script exits
# non-zero if any failed.
#
# A failing input is written by go test to <pkg>/testdata/fuzz/<Fuzzer>/,
# which is where it belongs: a file there is a seed, and every later go test
# (so make test) runs it and fails until the bug is fixed. The project's
# rule is that a crasher is committed together with its fix. So that such a
# file does not sit there unnoticed, the summary names every file this run
# added under testdata/fuzz and says so; `git status` shows them untracked.
# Reproduce one with: go test ./<pkg> -run '^<Fuzzer>/<file>$'.
#
# Budgets are execution counts (-fuzztime Nx), not durations: with a duration,
# go1.26's fuzz coordinator can report a bare "context deadline exceeded" as a
# failure when the deadline fires while a worker is mid-call (golang/go#75804,
# fixed in go1.27), which fails on a loaded machine with no failing input.
# A count has no wall-clock deadline to race; a slow machine only takes longer.
# Each budget below is about 10 s on 2 cores; FUZZSCALE multiplies them all
# (FUZZSCALE=10 for a longer run). A fuzzer not listed gets DEFAULT.
# FUZZONLY=REGEXP runs only the fuzzers whose names match.
#
# The generated corpus (inputs that widened coverage, not failures) goes to
# go's fuzz cache ($GOCACHE/fuzz, or FUZZCACHE if set), never to testdata.
set -uo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
SCALE=${FUZZSCALE:-1}
DEFAULT=20000
LOGDIR=${FUZZLOGDIR:-$(mktemp -d "${TMPDIR:-/tmp}/lazysnap-fuzz.XXXXXX")}
mkdir -p "$LOGDIR"
cacheflag=()
if [ -n "${FUZZCACHE:-}" ]; then
	cacheflag=(-test.fuzzcachedir "$FUZZCACHE")
fi

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

# corpus lists the files of a fuzzer's seed directory, one a line.
corpus() {
	if [ -d "$1" ]; then find "$1" -type f | sort; fi
}

summary=()
found=0 failed=0
newfiles=()
for pkg in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
	for f in $(grep -h '^func Fuzz' "$pkg"/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do
		n=$(($(budget "$f") * SCALE))
		dir="$pkg/testdata/fuzz/$f"
		if [ -n "${FUZZONLY:-}" ] && ! [[ $f =~ $FUZZONLY ]]; then continue; fi
		log="$LOGDIR/$(echo "${pkg#./}" | tr / _).$f.log"
		before=$(corpus "$dir")
		echo "fuzz $pkg $f for ${n} executions (log $log)"
		"$GO" test "$pkg" -run '^$' -fuzz "^${f}\$" -fuzztime "${n}x" "${cacheflag[@]}" >"$log" 2>&1
		rc=$?
		added=$(comm -13 <(echo "$before") <(corpus "$dir") | sed '/^$/d')
		found=$((found + 1))
		if [ "$rc" -eq 0 ] && [ -z "$added" ]; then
			summary+=("ok    $pkg $f")
			continue
		fi
		failed=$((failed + 1))
		tail -n 20 "$log"
		if [ -n "$added" ]; then
			for a in $added; do
				summary+=("FAIL  $pkg $f: crasher $a")
				newfiles+=("$a")
			done
		elif w=$(grep -o 'Failing input written to [^ ]*' "$log" | head -n1) && [ -n "$w" ]; then
			summary+=("FAIL  $pkg $f: crasher $pkg/${w#Failing input written to } (already in testdata)")
		elif s=$(grep -o "failure while testing seed corpus entry: [^ ]*" "$log" | head -n1) && [ -n "$s" ]; then
			summary+=("FAIL  $pkg $f: seed ${s#failure while testing seed corpus entry: } fails (a crasher not yet fixed, or a regression; make test fails on it too)")
		else
			summary+=("FAIL  $pkg $f: go test exited $rc without writing an input (coordinator or build error; log $log)")
		fi
	done
done

echo
echo "fuzz summary ($found fuzzers, logs in $LOGDIR):"
printf '  %s\n' "${summary[@]}"
if [ "$found" -eq 0 ]; then
	echo "fuzz: no fuzzers found" >&2
	exit 1
fi
if [ "${#newfiles[@]}" -gt 0 ]; then
	echo
	echo "fuzz: this run wrote ${#newfiles[@]} new failing input(s) into testdata:"
	printf '  %s\n' "${newfiles[@]}"
	echo "They are seeds now: every go test / make test runs them and fails until the bug is fixed."
	echo "Fix the bug and commit each file together with its fix (do not commit one without the other)."
fi
if [ "$failed" -gt 0 ]; then
	echo "fuzz: $failed of $found fuzzers failed" >&2
	exit 1
fi
echo "fuzz: all $found fuzzers passed"
