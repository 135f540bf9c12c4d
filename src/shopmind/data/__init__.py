"""Data layer: schema, readers, dataset adapters, registry, DuckDB store, splits."""
