#!/bin/sh
# Lint the workspace with the linters it configures.
set -eu
cd "${CODITECT_WORKSPACE:-.}"
if [ -x .venv/bin/ruff ]; then .venv/bin/ruff check .; fi
if [ -f package.json ] && [ -x node_modules/.bin/eslint ]; then node_modules/.bin/eslint .; fi
