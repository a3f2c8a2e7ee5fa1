"""Quality stages: heuristic filters, exact dedup and the Great Expectations release gate."""
