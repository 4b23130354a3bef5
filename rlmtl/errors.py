"""User-facing errors: the CLI prints them and exits with the error's `exit_code`.

Exit codes (the `rlmtl eval --help` epilog and the README list them too):

    0  success
    2  user error: bad config, override, dataset, task or argument (RlmtlError, ConfigError, DatasetError)
    3  checkpoint missing, corrupt or not matching its config (CheckpointError)
    4  output folder or report file cannot be written (OutputError)
    5  evaluation success below the bar set by --min-success / --min-task-success (SuccessBelowBar)
    6  evaluation episodes that failed on every rerun (worker crash or hang, or a simulator error such as a scene that cannot be built; EpisodeErrors); results
       are written, and this takes precedence over 5
    7  `rlmtl compare`: some runs have no results yet (a run failed, or its SLURM job is still queued or running with
       --no-wait; RunsUnfinished); results.json and results.md hold the finished ones
"""

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_CHECKPOINT = 3
EXIT_OUTPUT = 4
EXIT_BELOW_BAR = 5
EXIT_EPISODE_ERRORS = 6
EXIT_RUNS_UNFINISHED = 7


class RlmtlError(Exception):
    """A problem with the user's input (file, key, value) rather than a bug in rlmtl."""

    exit_code = EXIT_USER_ERROR


class ConfigError(RlmtlError):
    """A config file or override names an unknown key or holds a bad value."""


class DatasetError(RlmtlError):
    """A dataset file is missing, corrupt or does not match the config."""


class CheckpointError(RlmtlError):
    """A checkpoint is missing, corrupt or from another config."""

    exit_code = EXIT_CHECKPOINT


class OutputError(RlmtlError):
    """An output folder is missing (e.g. an unmounted volume) or a result file cannot be written."""

    exit_code = EXIT_OUTPUT


class EpisodeErrors(RlmtlError):
    """Some episodes failed on every rerun (worker crash or hang, or a simulator error): results are written, but
    their success rates cover fewer episodes than asked."""

    exit_code = EXIT_EPISODE_ERRORS


class SuccessBelowBar(RlmtlError):
    """An evaluation finished (its results are written) but success is below the requested bar."""

    exit_code = EXIT_BELOW_BAR

    def __init__(self, shortfalls: list[str]):
        self.shortfalls = list(shortfalls)
        count = len(self.shortfalls)
        lines = [f"success below the bar ({count} shortfall{'s' if count != 1 else ''}):", *(f"  {line}" for line in self.shortfalls)]
        super().__init__("\n".join(lines))


class RunsUnfinished(RlmtlError):
    """`rlmtl compare` ended with runs that have no results (failed, or queued on SLURM): the results of the others are written."""

    exit_code = EXIT_RUNS_UNFINISHED
