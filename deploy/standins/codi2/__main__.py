"""codi2 stand-in as the catalogue runs it: `codi2 server --host H --port P`. The demo's
stand-in (codi2_standin.py beside this file in the zipapp) takes the same options without the
subcommand."""

import sys

import codi2_standin

if sys.argv[1:2] == ["server"]:
    del sys.argv[1]
sys.exit(codi2_standin.main())
