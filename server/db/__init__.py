"""The data layer: SQLAlchemy models, sessions scoped to the caller, and the task repository."""
