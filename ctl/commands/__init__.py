"""maoctl's command groups, one module per resource."""
