"""Build tools run from a checkout (`make reference`, `make test`); nothing the suite ships imports them."""
