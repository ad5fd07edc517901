"""Stage 2, decide: statistics -> rule -> plan file, and the views of a plan (tables, figures, mergekit export)."""
