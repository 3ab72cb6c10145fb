"""Checkpoints: one HDF5 file per server, a JSON manifest written last, a ``LATEST`` pointer.

``layout`` names the folders and writes files atomically, ``manifest`` builds and checks
the manifest, ``shardfile`` writes and reads one server's file with block checksums, and
``saving`` holds what a server writes and reads back (only the partitions it owns now,
whatever the placement was) and the agreement on which checkpoint to resume from. When a
checkpoint is taken is the pauses' business (``mpips.pausing``, ``mpips.pause``).
Files are HDF5 arrays and JSON only: reading a checkpoint from elsewhere cannot run code.
"""
