# The same commands for people and for CI. `make demo` runs the pod; `make test` runs every test.
.PHONY: demo test test-fast e2e theia lint bench bench-quick soak bootstrap clean image image-test clean-image

bootstrap:
	scripts/bootstrap

# `make demo IDE=theia`: the real Eclipse Theia in the theia slot (built once, then cached).
demo: bootstrap
	IDE=$(IDE) scripts/demo

# The real Eclipse Theia of deploy/theia/, built with npm for this machine's node and cached
# under ${XDG_CACHE_HOME:-~/.cache}/coditect-pod/ (bootstrap does it too); the end-to-end tests
# use it.
theia:
	scripts/theia-build

# The real Theia behind the real nginx, driven by a headless chromium (tests/test_theia_e2e.py).
e2e: bootstrap theia
	scripts/test tests/test_theia_e2e.py

# The pod image is part of the set-up: `make test` builds it (once; after that from cache,
# offline) so that tests/test_image.py can run it.
test: bootstrap image
	scripts/test

# The edit-test loop: ruff and the unit tests (tests/conftest.py's FAST_FILES; no pod, PID 1,
# soak, bench, image or end-to-end test), under a minute on 2 cores. `make test` before a push.
test-fast: bootstrap
	.venv/bin/ruff check .
	.venv/bin/pytest -q -m fast -p no:cacheprovider $(PYTEST_ARGS)

# The pod image with podman, from Debian's packages and PyPI only (deploy/README.md).
image:
	scripts/image

# The image in a container engine, as the StatefulSet runs it (tests/test_image.py).
image-test: bootstrap image
	.venv/bin/pytest -q tests/test_image.py $(PYTEST_ARGS)

# The images and podman's store of this checkout's builds (under ~/.cache/coditect-pod).
clean-image:
	scripts/podman rm --all --force >/dev/null
	scripts/podman rmi --all --force >/dev/null

lint: bootstrap
	.venv/bin/ruff check .
	.venv/bin/mypy start healthz coditect_init coditect_file_monitor soak bench tests

bench: bootstrap
	scripts/bench

bench-quick: bootstrap
	scripts/bench --quick

# The chaos soak (docs/SOAK.md): 10 minutes by default; `make soak SOAK_ARGS="--duration 120"`.
soak: bootstrap
	scripts/soak $(SOAK_ARGS)

clean:
	rm -rf .demo build *.egg-info
