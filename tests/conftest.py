"""`--reverse`: run the collected tests in reverse order, to show that no test file depends on
the order of its tests (module and session fixtures included).

`make test-fast` runs the tests marked `fast` here: the edit-test loop's unit tests, under a
minute together on 2 cores (README, "Development"). The set is a list of files, not a guess: a
file is in it once it is known to be fast (no engine started as a pod or as PID 1, no soak,
bench, image, wheel or end-to-end test, no test much over a second), so a new file stays out
until someone adds it, having timed it with `--durations`."""

from __future__ import annotations

from pathlib import Path

import pytest

FAST_FILES = frozenset({
    "test_catalogue.py", "test_catalogue_corpus.py", "test_catalogue_properties.py",
    "test_coditect_init.py", "test_controls_shown.py", "test_deploy_dockerfile.py",
    "test_deploy_manifests.py", "test_durations.py", "test_events_doc.py",
    "test_file_monitor_units.py", "test_health_app.py", "test_health_connguard.py",
    "test_health_libraries.py", "test_health_spec.py", "test_import_graph.py",
    "test_lifecycle.py", "test_logs_console.py", "test_logs_file.py", "test_logs_json.py",
    "test_logs_pump.py", "test_logs_stream.py", "test_mounts.py", "test_podctl_doctor.py",
    "test_podctl_format.py", "test_probes.py", "test_self_contained.py",
    "test_settings_hostile.py", "test_strays.py",
})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--reverse", action="store_true",
                     help="run the tests in reverse order (each file must not depend on it)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fast: in `make test-fast`'s set (tests/conftest.py)")
    missing = sorted(name for name in FAST_FILES if not (Path(__file__).parent / name).is_file())
    if missing:  # a renamed file would silently leave the fast set
        raise pytest.UsageError(f"tests/conftest.py FAST_FILES names no such file: {missing}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.name in FAST_FILES:
            item.add_marker(pytest.mark.fast)
    if config.getoption("--reverse"):
        items.reverse()
