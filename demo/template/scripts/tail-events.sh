#!/bin/sh
# Show the last N file events (default 20).
set -eu
exec tail -n "${1:-20}" "${CODITECT_HOME:-/app/.coditect}/logs/events.log"
