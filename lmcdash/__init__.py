"""lmcdash: linear mode connectivity, temperature calibration and LEWC diagnostics."""

__version__ = "0.1.0"
