"""pcaptool: packet capture and analysis for serverless containers."""

__version__ = "0.1.0"
