"""coditect-v5-api stand-in as the catalogue runs it (no arguments; the port is 8080): the
demo's stand-in, api_standin.py beside this file in the zipapp."""

import sys

import api_standin

sys.exit(api_standin.main())
