"""The one error class of tl_geom."""

__all__ = ["TlGeomError"]


class TlGeomError(ValueError):
    """Bad input or an unavailable resource, named in the message.

    A ValueError so that ``except ValueError`` in user code keeps working. The
    command line turns it into one line on stderr and exit code 2.
    """
