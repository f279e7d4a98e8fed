#!/bin/sh
# Run the workspace's tests with whatever runner it has; extra arguments go to the runner.
set -eu
cd "${CODITECT_WORKSPACE:-.}"
if [ -x .venv/bin/pytest ]; then exec .venv/bin/pytest "$@"; fi
if [ -f package.json ]; then exec npm test -- "$@"; fi
if [ -f Cargo.toml ]; then exec cargo test "$@"; fi
echo "run-tests: no test runner found in $(pwd)" >&2
exit 2
