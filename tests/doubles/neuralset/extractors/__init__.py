"""Double of neuralset.extractors (text only)."""
