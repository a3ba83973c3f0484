class UsageError(Exception):
    """A problem with the user's input: reported as one line, exit code 2."""


class TrainingDiverged(RuntimeError):
    """A loss or metric became NaN or infinite; no row with it is written. `seed` is the index
    (within the agent's seeds) of the seed that diverged, None when it concerns all of them."""

    def __init__(self, message: str, seed: int | None = None) -> None:
        super().__init__(message)
        self.seed = seed
