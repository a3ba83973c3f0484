class UsageError(Exception):
    """A problem with the user's input: reported as one line, exit code 2."""


class TrainingDiverged(RuntimeError):
    """A loss or metric became NaN or infinite; no row with it is written."""
