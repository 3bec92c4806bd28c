"""Pydantic schemas of the API, kept apart from the SQLAlchemy models."""
