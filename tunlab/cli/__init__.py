"""The `tunlab` command line."""
