"""Stockade: hard multi-tenancy for Kubernetes."""
