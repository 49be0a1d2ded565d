"""Recommendation REST API: listings visually similar to a listing or an uploaded image."""
