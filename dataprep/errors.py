"""The errors `tessera prepare` stops with (pipeline.py re-exports them)."""


class PrepareError(Exception):
    """The run cannot produce trustworthy output (unreadable input, too much quarantined, ...)."""

    exit_code = 1


class ConfigProblem(PrepareError):
    """A config that validates but cannot work, found during setup or split (e.g. a template that hits its
    limits, a validation split that leaves nothing to train on): exit 2, like an invalid config."""

    exit_code = 2
