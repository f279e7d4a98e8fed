"""The .coditect state directory: seeded from the image's template on first boot, completed
(never overwritten) on every boot after. See docs/CODITECT_HOME.md."""

from .errors import InitError
from .home import prepare
from .report import Action, Report

__all__ = ["Action", "InitError", "Report", "prepare"]
