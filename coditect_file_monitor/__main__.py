"""``python -m coditect_file_monitor`` is the console script ``coditect-file-monitor``."""

from coditect_file_monitor.cli import main

raise SystemExit(main())
