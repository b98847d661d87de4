"""Errors whose message is fit to show a user."""


class DMDError(Exception):
    """An error whose message is fit to show a user."""


class DataError(DMDError):
    """Bad input data or settings."""


class CheckpointError(DMDError):
    """A checkpoint that does not load or does not fit."""
