"""What a user runs and reads: the command line, the HTML reports and ``tl-geom reproduce``."""
