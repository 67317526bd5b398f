"""The engine: scoring, generation, metrics, evaluation and the cost meter."""
