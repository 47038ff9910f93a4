"""titans_swiglu_memory."""
