"""Shared building blocks: settings, event schemas, and one client wrapper per external system."""
