"""Subcommands of the poise CLI, one module each."""
