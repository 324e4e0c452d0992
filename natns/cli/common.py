"""The old name of natns.cli.main, kept importable."""

from .main import (  # noqa: F401
    PIPE_WIDTH,
    _fail,
    err,
    error_line,
    exit_with,
    fail,
    handle_errors,
    main,
    natsorted,
    natural_key,
    out,
    progress_printer,
)
