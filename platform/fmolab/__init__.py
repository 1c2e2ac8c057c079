"""fmolab: temporal super-resolution of fast-moving objects (DeFMO) as a Ray platform."""
__version__ = "0.1.0"
