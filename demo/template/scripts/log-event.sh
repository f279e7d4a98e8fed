#!/bin/sh
# Hook helper: append one JSON event (kind, time) to the pod's events log.
set -eu
kind=${1:?usage: log-event.sh KIND}
log="${CODITECT_HOME:-/app/.coditect}/logs/events.log"
printf '{"ts":"%s","source":"hook","kind":"%s"}\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$kind" >>"$log"
