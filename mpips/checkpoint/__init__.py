"""Checkpoints: one HDF5 file per server, a JSON manifest written last, a ``LATEST`` pointer.

``layout`` names the folders and writes files atomically, ``manifest`` builds and checks
the manifest, ``shardfile`` writes and reads one server's file with block checksums,
``moves`` plans which stored rows each server reads when the number of servers changes,
and ``protocol`` is the MPI side: when ranks stop, who writes what, and restoring.
Files are HDF5 arrays and JSON only: reading a checkpoint from elsewhere cannot run code.
"""
