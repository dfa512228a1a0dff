"""poise.rtl."""
