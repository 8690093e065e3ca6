"""The `autoround` command line and its recipe commands."""
