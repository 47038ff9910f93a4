"""titans_attention."""
