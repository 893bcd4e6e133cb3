"""Candidate generation and ranking for search."""
