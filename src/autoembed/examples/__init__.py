"""Demo data for `autoembed quickstart`."""
