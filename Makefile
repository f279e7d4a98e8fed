# The same commands for people and for CI. `make demo` runs the pod; `make test` runs every test.
.PHONY: demo test lint bench bench-quick soak bootstrap clean

bootstrap:
	scripts/bootstrap

demo: bootstrap
	scripts/demo

test: bootstrap
	scripts/test

lint: bootstrap
	.venv/bin/ruff check .
	.venv/bin/mypy start healthz coditect_init coditect_file_monitor soak

bench: bootstrap
	scripts/bench

bench-quick: bootstrap
	scripts/bench --quick

# The chaos soak (docs/SOAK.md): 10 minutes by default; `make soak SOAK_ARGS="--duration 120"`.
soak: bootstrap
	scripts/soak $(SOAK_ARGS)

clean:
	rm -rf .demo build *.egg-info
