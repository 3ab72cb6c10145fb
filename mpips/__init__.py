"""mpips: a parameter server for sparse CTR models over MPI."""
__version__ = "0.1.0"
__all__ = ["__version__"]
