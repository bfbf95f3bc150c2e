"""spade-anime: turn rough colour sketches into anime faces with a SPADE GAN."""

__version__ = "0.1.0"
