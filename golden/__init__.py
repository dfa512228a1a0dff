"""poise.golden."""
