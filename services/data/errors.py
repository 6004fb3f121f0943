"""The one error type of data loading, apart from the loaders so that every loader module can raise it."""


class DataError(ValueError):
    """A dataset that cannot be used as configured: bad row, missing column, unknown split or category."""
