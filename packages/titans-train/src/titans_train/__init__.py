"""titans_train."""
