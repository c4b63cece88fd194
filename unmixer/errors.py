"""The one exception type of Unmixer."""


class UnmixerError(Exception):
    """Bad input or an impossible request, with a one-line message a user can act on.

    Raised for unreadable, corrupt, empty, silent, too short or too long audio, for songs
    with no usable beat grid, and for parameters out of range. The app and the CLI show
    ``str(err)`` as is (the CLI exits with status 2); it never holds a traceback.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
