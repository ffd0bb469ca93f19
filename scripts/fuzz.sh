#!/usr/bin/env bash
# Runs each fuzz target (PKG:FUNC arguments) for $FUZZTIME. A target fails
# on a finding: a failing input written to testdata/fuzz, a panic, a test
# error. Go 1.26's fuzzing coordinator can also end a clean run with a
# bare "context deadline exceeded" when -fuzztime expires while a worker
# is mid-call (go.dev/issue/75804, fixed in Go 1.27): that run is retried
# once, and a second bare deadline counts as clean only when the target's
# seed corpus and everything it found still pass.
set -uo pipefail
go=${GO:-go}
fuzztime=${FUZZTIME:-10s}
failed=0
for t in "$@"; do
	pkg=./${t%%:*}
	fn=${t##*:}
	for attempt in 1 2; do
		echo "fuzz $pkg $fn ($fuzztime)"
		out=$("$go" test -run '^$' -fuzz "^$fn\$" -fuzztime "$fuzztime" -fuzzminimizetime 50x "$pkg" 2>&1)
		rc=$?
		echo "$out" | tail -n 4
		[ $rc -eq 0 ] && break
		if echo "$out" | grep -q "context deadline exceeded" && ! echo "$out" | grep -qE "Failing input written|panic:|_test.go:[0-9]+:"; then
			if [ $attempt -eq 1 ]; then
				echo "fuzz $fn: bare deadline at the end of -fuzztime (go.dev/issue/75804): once more"
				continue
			fi
			if "$go" test -run "^$fn\$" "$pkg" >/dev/null; then
				echo "fuzz $fn: bare deadline again; the corpus passes: clean"
				break
			fi
		fi
		echo "fuzz $fn: FAILED"
		failed=1
		break
	done
done
exit $failed
