"""poise.firmware."""
