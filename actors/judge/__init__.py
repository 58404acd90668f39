"""The judge actor template: scores a result and rewrites the route (see README.md)."""
