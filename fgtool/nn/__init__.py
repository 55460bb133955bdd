"""Building blocks shared by the backends."""
