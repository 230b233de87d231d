"""edged: an int8 edge inference runtime with on-device adaptation."""

__version__ = "0.1.0"
