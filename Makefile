# The same commands for people and for CI. `make demo` runs the pod; `make test` runs every test.
.PHONY: demo test lint bench bench-quick bootstrap clean

bootstrap:
	scripts/bootstrap

demo: bootstrap
	scripts/demo

test: bootstrap
	scripts/test

lint: bootstrap
	.venv/bin/ruff check .
	.venv/bin/mypy start healthz coditect_init coditect_file_monitor

bench: bootstrap
	scripts/bench

bench-quick: bootstrap
	scripts/bench --quick

clean:
	rm -rf .demo build *.egg-info
