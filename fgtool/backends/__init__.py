"""One paper per file. Each module registers its backend with ``fgtool.registry.register``."""
