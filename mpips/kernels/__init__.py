"""Numba kernels: plain functions over arrays with explicit dtypes, ``cache=True``.

``sparse`` holds the key bookkeeping both roles share, ``lr`` the worker-side model
gradients, ``optim`` the server-side row updates. Each kernel has a NumPy reference in
``tests/reference.py`` that its unit test compares against. No MPI here.
"""
