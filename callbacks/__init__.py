"""Lightning callbacks shared by every model family, each imported from its module."""
