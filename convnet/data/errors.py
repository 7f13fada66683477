"""The one error type of convnet.data: bad input, said in one line."""


class DataError(ValueError):
    """A dataset, an image tree or a loader argument is unusable.

    The message is one line naming the path (or argument) and the reason.
    """
