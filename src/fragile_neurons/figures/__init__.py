"""Pictures of the pipeline's results, one module per topic (matplotlib, Agg backend)."""
