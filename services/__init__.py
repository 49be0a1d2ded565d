"""Deployable services of the platform and the shared domain code they use."""
