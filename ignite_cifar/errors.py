"""Errors the CLI turns into one line on stderr: a user's (exit 2), the machine's (exit 1), a stop."""


class UserError(Exception):
    """Bad input (config, data, files on disk) that the user can fix; the message says how."""


class ConfigError(UserError):
    """A config field has an unknown name, a wrong type or a value outside what is allowed."""


class DataError(UserError):
    """The data set cannot be found, read or decoded."""


class CheckpointError(UserError):
    """A file is not a checkpoint of this project, or does not fit the model."""


class DamagedCheckpointError(CheckpointError):
    """A file that should be a checkpoint of this project is truncated or unreadable (a copy cut short, a disk
    fault), as opposed to one that is readable but not ours or not safe to load."""


class MachineError(Exception):
    """The machine failed a write (a full disk, a vanished folder, a file-size limit) or killed a training process
    (the OOM killer): exit code 1. The message names the file or the process and the cause, and, during training,
    the last good checkpoint."""

    exit_code = 1


class TrainingStopped(Exception):
    """Training stopped early (interrupt or non-finite loss); the message says what was kept."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
