"""Feast feature repository: entities, feature views and push sources of the platform."""
