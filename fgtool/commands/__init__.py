"""One module per CLI command; :mod:`fgtool.api` re-exports their functions."""
