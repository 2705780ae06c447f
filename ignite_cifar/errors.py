"""Errors a user can cause: the CLI turns each into one line on stderr and exit code 2."""


class UserError(Exception):
    """Bad input (config, data, files on disk) that the user can fix; the message says how."""


class ConfigError(UserError):
    """A config field has an unknown name, a wrong type or a value outside what is allowed."""


class DataError(UserError):
    """The data set cannot be found, read or decoded."""


class CheckpointError(UserError):
    """A file is not a checkpoint of this project, or does not fit the model."""


class TrainingStopped(Exception):
    """Training stopped early (interrupt or non-finite loss); the message says what was kept."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
