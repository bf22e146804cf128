"""Build tools run from a checkout (`make reference`, `make test`), never imported by the suite at run time."""
