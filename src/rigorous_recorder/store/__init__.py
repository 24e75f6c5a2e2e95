"""The on-disk format of a collection: run folders, append-only segments, compaction.

::

    my_study.collection/
      collection.json                  format version and collection id
      numbering.lock                   held while a run takes its experiment number
      runs/<run id>/run.json           bookkeeping: number, status, times, pid (atomic rewrite)
      runs/<run id>/recorders.json     the tree while running: id, parent, local data (atomic rewrite)
      runs/<run id>/segments/*.arrow   Arrow IPC streams appended while running
      runs/<run id>/records-<n>.parquet  the compacted run, named in run.json
"""
