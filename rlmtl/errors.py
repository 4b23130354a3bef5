"""User-facing errors: the CLI prints them as one line and exits non-zero."""


class RlmtlError(Exception):
    """A problem with the user's input (file, key, value) rather than a bug in rlmtl."""

    exit_code = 2


class ConfigError(RlmtlError):
    """A config file or override names an unknown key or holds a bad value."""


class DatasetError(RlmtlError):
    """A dataset file is missing, corrupt or does not match the config."""


class CheckpointError(RlmtlError):
    """A checkpoint is missing, corrupt or from another config."""
