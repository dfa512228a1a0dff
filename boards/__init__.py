"""poise.boards."""
