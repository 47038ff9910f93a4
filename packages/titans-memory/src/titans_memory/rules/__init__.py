"""Update rules: how the memory evolves over a sequence (Eq 13–14, 16)."""
