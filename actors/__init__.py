"""Ready-made actor templates: enhance, judge, review (see each folder's README)."""
