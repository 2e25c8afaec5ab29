"""Process exit codes (sysexits-style), shared by `dockd` and `dockctl`."""

OK = 0
FAILURE = 1
USAGE = 2
UNAVAILABLE = 69  # EX_UNAVAILABLE: the daemon is not running / cannot be reached
NOPERM = 77  # EX_NOPERM: access to the control socket denied
CONFIG = 78  # EX_CONFIG: configuration or key file error
