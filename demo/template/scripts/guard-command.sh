#!/bin/sh
# PreToolUse hook: the proposed command arrives on stdin; exit 2 refuses it.
set -eu
command=$(cat)
case "$command" in
  *"rm -rf /"*|*"mkfs"*|*"> /dev/sd"*)
    echo "guard-command: refused: $command" >&2
    exit 2 ;;
esac
exit 0
